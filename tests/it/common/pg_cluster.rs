//! A private PostgreSQL cluster, for tests that restart it or change its
//! server settings (TLS): `initdb` into a temporary directory, started on a
//! free port with `pg_ctl`, stopped at once when dropped.
//!
//! It uses the binaries of the PostgreSQL that `TEST_DATABASE_URL` points
//! at (`pg_config --bindir`, or `PG_BINDIR`). PostgreSQL refuses to run as
//! root, so as root the cluster belongs to, and runs as, user `postgres`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private cluster; stopped (immediate mode) when dropped.
pub struct PgCluster {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Makes a cluster with `settings` (lines of `postgresql.conf`) and
    /// `hba` (the whole `pg_hba.conf`), and starts it. `files` are written
    /// into the data directory first (certificates, keys), owned by the
    /// server's user with mode 0600.
    fn start(settings: &[String], hba: &str, files: &[(&str, &str)]) -> PgCluster {
        let bindir = bindir();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        let data = dir.path().join("data");
        if as_postgres {
            chmod(dir.path(), 0o755);
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let mut cluster = PgCluster {
            port: 0,
            bindir,
            data,
            as_postgres,
            dir,
        };
        let mut initdb = cluster.tool("initdb");
        run(initdb
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&cluster.data));
        cluster.port = free_port();
        let mut conf = vec![
            format!("port = {}", cluster.port),
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!(
                "unix_socket_directories = '{}'",
                cluster.dir.path().display()
            ),
            "fsync = off".to_owned(),
            "max_connections = 60".to_owned(),
            "shared_buffers = 16MB".to_owned(),
        ];
        conf.extend(settings.iter().cloned());
        let conf_path = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(&format!("\n{}\n", conf.join("\n")));
        std::fs::write(&conf_path, text).expect("postgresql.conf");
        std::fs::write(cluster.data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        for (name, contents) in files {
            let path = cluster.data.join(name);
            std::fs::write(&path, contents).expect("a cluster file");
            chmod(&path, 0o600);
            if cluster.as_postgres {
                run(Command::new("chown").arg("postgres:").arg(&path));
            }
        }
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        cluster
    }

    /// [`PgCluster::start`] on a blocking thread: `initdb` and `pg_ctl`
    /// would hold up the test's runtime.
    pub async fn launch(settings: &[String], hba: &str, files: &[(&str, &str)]) -> PgCluster {
        let settings = settings.to_vec();
        let hba = hba.to_owned();
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(name, contents)| ((*name).to_owned(), (*contents).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(name, contents)| (name.as_str(), contents.as_str()))
                .collect();
            PgCluster::start(&settings, &hba, &files)
        })
        .await
        .expect("the cluster's start did not panic")
    }

    /// `postgres://postgres@{host}:{port}/postgres{query}`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }

    /// The folder of its Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Restarts the server as an operator would (`pg_ctl restart`, fast
    /// mode: sessions are terminated, transactions rolled back).
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-w", "-t", "60", "-m", "fast"]);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.path().join("server.log");
        let mut command = self.tool("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(args);
        let out = command.output().expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bindir.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

/// Where `initdb` and `pg_ctl` are.
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return dir.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    // Debian keeps the server binaries out of PATH, one directory a version.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("initdb not found: set PG_BINDIR to PostgreSQL's bin directory")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a cluster command");
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}
