//! Marks the PostgreSQL tests as ignored, with the reason in `cargo test`'s
//! own output, when `TEST_DATABASE_URL` is not set at build time.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    if std::env::var_os("TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
}
