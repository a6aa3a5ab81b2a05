//! Where async-graphql 7 departs from the GraphQL specification in what it
//! serves or prints, and the corrections, so that introspection and
//! `schema.graphql` describe the same, spec-conformant schema under a
//! standard schema diff (`tests/schema/run.sh`).
//!
//! - `@deprecated` is served as the October 2021 edition has it, `reason:
//!   String = "No longer supported"` on fields, arguments, input fields and
//!   enum values: what graphql-js 16 and graphql-core 3.2 build in. (The
//!   September 2025 edition makes it `String!`; declaring it in the SDL
//!   keeps tools of either edition from seeing a change.)
//! - Built-in directive definitions in the SDL: the crate's SDL export leaves
//!   out `@deprecated`, `@specifiedBy` and `@oneOf` when no type uses them,
//!   although introspection serves them. A tool that builds a schema from
//!   such an SDL fills in its own built-ins, which differ between tools and
//!   versions (graphql-core 3.3 and graphql-js 17 have `reason: String!`
//!   and a draft `DIRECTIVE_DEFINITION` location), and reports breaking
//!   changes that are not there. [`complete_sdl`] writes the served
//!   definitions (the spec lets an SDL declare built-in directives).
//! - Built-in scalars: the crate always serves `Int`, `Float`, `String`,
//!   `Boolean` and `ID`; the spec wants one that no field, argument or input
//!   field references left out of introspection (and of the SDL, where the
//!   crate already leaves them all out). Ours does not use `ID`.
//!
//! The crate hard-codes both in `Registry::add_system_types` and has no
//! option for either; the one hook it gives onto the built registry is a
//! custom directive's `register`, which [`SpecConformance`] uses (it is
//! registered under the name `deprecated`, a type-system directive that no
//! operation can use, so its executable half never runs). `CustomDirectiveFactory`
//! and `registry` are `#[doc(hidden)]` in async-graphql: an upgrade may
//! change them, and the unit tests below and `tests/schema/run.sh` say so.

use std::borrow::Cow;
use std::collections::HashSet;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::Directive;
use async_graphql::registry::{
    __DirectiveLocation, Deprecation, MetaDirective, MetaInputValue, MetaType, MetaTypeName,
    Registry,
};
use async_graphql::{
    ContextDirective, CustomDirective, CustomDirectiveFactory, ServerError, ServerResult,
};

/// The built-in scalars (spec §3.5): served only when referenced.
const BUILT_IN_SCALARS: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

/// Registers [`type_system_directives`] in place of the crate's and drops
/// the built-in scalars that nothing references; see the module comment.
pub(super) struct SpecConformance;

impl CustomDirectiveFactory for SpecConformance {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("deprecated")
    }

    fn register(&self, registry: &mut Registry) {
        for directive in type_system_directives() {
            registry
                .directives
                .insert(directive.name.clone(), directive);
        }
        remove_unreferenced_built_in_scalars(registry);
    }

    fn create(
        &self,
        _ctx: &ContextDirective<'_>,
        _directive: &Directive,
    ) -> ServerResult<Box<dyn CustomDirective>> {
        // Validation rejects @deprecated anywhere in an operation (its
        // locations are all type-system ones), so this is never reached.
        Err(ServerError::new(
            "@deprecated is a type-system directive",
            None,
        ))
    }
}

/// The built-in directives that the crate's SDL export prints only when a
/// type uses them, as the spec defines them (descriptions are the crate's).
fn type_system_directives() -> Vec<MetaDirective> {
    use __DirectiveLocation::*;
    vec![
        directive(
            "deprecated",
            "Marks an element of a GraphQL schema as no longer supported.",
            &[
                FIELD_DEFINITION,
                ARGUMENT_DEFINITION,
                INPUT_FIELD_DEFINITION,
                ENUM_VALUE,
            ],
            Some(argument(
                "reason",
                "A reason for why it is deprecated, formatted using Markdown syntax",
                "String",
                Some(r#""No longer supported""#),
            )),
        ),
        directive(
            "specifiedBy",
            "Provides a scalar specification URL for specifying the behavior of custom scalar types.",
            &[SCALAR],
            Some(argument(
                "url",
                "URL that specifies the behavior of this scalar.",
                "String!",
                None,
            )),
        ),
        directive(
            "oneOf",
            "Indicates that an Input Object is a OneOf Input Object (and thus requires exactly one of its field be provided)",
            &[INPUT_OBJECT],
            None,
        ),
    ]
}

fn directive(
    name: &str,
    description: &str,
    locations: &[__DirectiveLocation],
    arg: Option<MetaInputValue>,
) -> MetaDirective {
    MetaDirective {
        name: name.to_string(),
        description: Some(description.to_string()),
        locations: locations.to_vec(),
        args: arg
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect::<IndexMap<_, _>>(),
        is_repeatable: false,
        visible: None,
        composable: None,
    }
}

fn argument(name: &str, description: &str, ty: &str, default: Option<&str>) -> MetaInputValue {
    MetaInputValue {
        name: name.to_string(),
        description: Some(description.to_string()),
        ty: ty.to_string(),
        deprecation: Deprecation::NoDeprecated,
        default_value: default.map(str::to_string),
        visible: None,
        inaccessible: false,
        tags: Vec::new(),
        is_secret: false,
        directive_invocations: Vec::new(),
    }
}

fn remove_unreferenced_built_in_scalars(registry: &mut Registry) {
    let mut referenced = HashSet::new();
    let mut add = |ty: &str| {
        referenced.insert(MetaTypeName::concrete_typename(ty).to_string());
    };
    for ty in registry.types.values() {
        match ty {
            MetaType::Object { fields, .. } | MetaType::Interface { fields, .. } => {
                for field in fields.values() {
                    add(&field.ty);
                    field.args.values().for_each(|arg| add(&arg.ty));
                }
            }
            MetaType::InputObject { input_fields, .. } => {
                input_fields.values().for_each(|field| add(&field.ty));
            }
            MetaType::Scalar { .. } | MetaType::Union { .. } | MetaType::Enum { .. } => {}
        }
    }
    for directive in registry.directives.values() {
        directive.args.values().for_each(|arg| add(&arg.ty));
    }
    for name in BUILT_IN_SCALARS {
        if !referenced.contains(name) {
            registry.types.remove(name);
        }
    }
}

/// `sdl` (the crate's export) with the definitions of
/// [`type_system_directives`] that it left out, before the `schema` block.
pub(super) fn complete_sdl(sdl: String) -> String {
    let printed = |name: &str| {
        sdl.lines().any(|line| {
            line.strip_prefix("directive @")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with(['(', ' ']))
        })
    };
    let missing: String = type_system_directives()
        .iter()
        .filter(|directive| !printed(&directive.name))
        .map(directive_sdl)
        .collect();
    let at = sdl.find("\nschema {").map_or(sdl.len(), |at| at + 1);
    let mut out = sdl;
    out.insert_str(at, &missing);
    out
}

/// One directive definition as the crate's SDL export writes it.
fn directive_sdl(directive: &MetaDirective) -> String {
    let mut sdl = String::new();
    if let Some(description) = &directive.description {
        sdl.push_str(&format!("\"\"\"\n{description}\n\"\"\"\n"));
    }
    sdl.push_str(&format!("directive @{}", directive.name));
    if !directive.args.is_empty() {
        let args: Vec<String> = directive
            .args
            .values()
            .map(|arg| match &arg.default_value {
                Some(default) => format!("{}: {} = {default}", arg.name, arg.ty),
                None => format!("{}: {}", arg.name, arg.ty),
            })
            .collect();
        sdl.push_str(&format!("({})", args.join(", ")));
    }
    if directive.is_repeatable {
        sdl.push_str(" repeatable");
    }
    let locations: Vec<String> = directive
        .locations
        .iter()
        .map(|l| format!("{l:?}"))
        .collect();
    sdl.push_str(&format!(" on {}\n", locations.join(" | ")));
    sdl
}

#[cfg(test)]
mod tests {
    use crate::config::Limits;
    use serde_json::{Value, json};

    async fn introspect(query: &str) -> Value {
        let schema = super::super::build_schema(None, &Limits::default());
        let response = schema.execute(query).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        response.data.into_json().unwrap()
    }

    #[tokio::test]
    async fn deprecated_is_the_specs() {
        let data = introspect(
            r#"{ __schema { directives { name locations isRepeatable
                 args { name defaultValue type { kind ofType { name } } } } } }"#,
        )
        .await;
        let deprecated = data["__schema"]["directives"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "deprecated")
            .unwrap();
        assert_eq!(
            deprecated["locations"],
            json!([
                "FIELD_DEFINITION",
                "ARGUMENT_DEFINITION",
                "INPUT_FIELD_DEFINITION",
                "ENUM_VALUE"
            ])
        );
        assert_eq!(deprecated["isRepeatable"], false);
        let reason = &deprecated["args"][0];
        assert_eq!(reason["name"], "reason");
        assert_eq!(reason["defaultValue"], r#""No longer supported""#);
        assert_eq!(reason["type"], json!({"kind": "SCALAR", "ofType": null}));
    }

    #[tokio::test]
    async fn unreferenced_built_in_scalars_are_not_served() {
        let data = introspect("{ __schema { types { name } } }").await;
        let names: Vec<&str> = data["__schema"]["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"ID"), "{names:?}");
        for used in ["Int", "String", "Boolean"] {
            assert!(names.contains(&used), "{used} missing from {names:?}");
        }
    }

    #[test]
    fn the_sdl_declares_every_served_type_system_directive() {
        let sdl = super::super::sdl();
        for line in [
            r#"directive @deprecated(reason: String = "No longer supported") on FIELD_DEFINITION | ARGUMENT_DEFINITION | INPUT_FIELD_DEFINITION | ENUM_VALUE"#,
            "directive @specifiedBy(url: String!) on SCALAR",
            "directive @oneOf on INPUT_OBJECT",
        ] {
            assert_eq!(
                sdl.lines().filter(|l| *l == line).count(),
                1,
                "{line}\n{sdl}"
            );
        }
    }
}
