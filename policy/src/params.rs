//! A template's parameters: what the operator may set and how secrets must be given.
//!
//! The host checks a container's parameters at load and refuses to start on a mistake; the
//! mock host checks a test's parameters the same way before running the template, so a test
//! cannot pass with a configuration production would refuse.

use std::collections::HashMap;

use serde_json::Value;
use sluice_manifest::Declaration;

/// A parameter value and the secret values composed into it.
///
/// A value written as `${ENV_VAR}` (or containing such references, or a table holding them)
/// is secret; `secrets` lists the substituted environment values themselves, so masking finds
/// them wherever the template puts them, whole or composed (`"Bearer ${TOKEN}"`).
#[derive(Clone, PartialEq)]
pub struct Param {
    /// The value as JSON.
    pub value: Value,
    /// The secret values substituted into it (empty for a plain parameter).
    pub secrets: Vec<String>,
}

impl Param {
    /// A plain (not secret) parameter.
    pub fn plain(value: Value) -> Self {
        Param { value, secrets: Vec::new() }
    }

    /// A parameter whose whole value is a secret (as `${ENV_VAR}` gives it).
    pub fn secret(value: &str) -> Self {
        Param { value: Value::String(value.to_string()), secrets: vec![value.to_string()] }
    }

    /// Whether it came (in whole or part) from the environment.
    pub fn is_secret(&self) -> bool {
        !self.secrets.is_empty()
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_secret() { f.write_str("\"[secret]\"") } else { write!(f, "{}", self.value) }
    }
}

/// A parameter set the template cannot run with. The text names the parameter and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Not one the template declares.
    #[error("parameter {name:?} is not one that template {template:?} takes (it takes: {known})")]
    Unknown {
        /// The parameter.
        name: String,
        /// The template's name.
        template: String,
        /// The declared names, comma-separated.
        known: String,
    },
    /// A secret given in clear.
    #[error("parameter {0:?} is a secret: write it as \"${{ENV_VAR}}\" and export the value, so it is not stored in the config file")]
    SecretInClear(String),
    /// A value of another type than the declared default's.
    #[error("parameter {name:?} takes {expected}")]
    WrongType {
        /// The parameter.
        name: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A required one is missing.
    #[error("parameter {name:?} is required ({description}): add it under params")]
    Missing {
        /// The parameter.
        name: String,
        /// Its declared description.
        description: String,
    },
}

/// Checks the given parameters against the declaration: each must be declared, secret ones
/// given as secrets, required ones present. Returns them by name, with the declared default of
/// each one not given.
pub fn check(decl: &Declaration, given: &[(String, Param)]) -> Result<HashMap<String, Param>, ParamError> {
    for (name, param) in given {
        let Some(spec) = decl.parameter(name) else {
            return Err(ParamError::Unknown {
                name: name.clone(),
                template: decl.name.clone(),
                known: decl.parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
            });
        };
        if spec.secret && !param.is_secret() {
            return Err(ParamError::SecretInClear(name.clone()));
        }
        // A declared default declares the type too.
        match &spec.default {
            Some(Value::Bool(_)) if !param.value.is_boolean() => {
                return Err(ParamError::WrongType { name: name.clone(), expected: "true or false (no quotes)" });
            }
            Some(Value::String(_)) if !param.value.is_string() => {
                return Err(ParamError::WrongType { name: name.clone(), expected: "a string (in quotes)" });
            }
            Some(Value::Number(_)) if !param.value.is_i64() => {
                return Err(ParamError::WrongType { name: name.clone(), expected: "a whole number (no quotes)" });
            }
            _ => {}
        }
    }
    if let Some(spec) = decl.parameters.iter().find(|p| p.required && !given.iter().any(|(n, _)| *n == p.name)) {
        return Err(ParamError::Missing { name: spec.name.clone(), description: spec.description.clone() });
    }
    let mut params: HashMap<String, Param> = given.iter().cloned().collect();
    for spec in &decl.parameters {
        if let Some(default) = &spec.default {
            params.entry(spec.name.clone()).or_insert_with(|| Param::plain(default.clone()));
        }
    }
    Ok(params)
}

/// The declared permissions with outbound `{parameter}` patterns filled in from these
/// parameters ([`Declaration::resolved_permissions`]): what the host and the mock host grant
/// against.
pub fn resolved_permissions(decl: &Declaration, params: &HashMap<String, Param>) -> Result<sluice_manifest::PermissionSet, sluice_manifest::DeclarationError> {
    decl.resolved_permissions(|name| params.get(name).and_then(|p| p.value.as_str()).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_manifest::{Kind, Manifest, Parameter, Permissions};

    const M: Manifest = Manifest {
        kind: Kind::Tag,
        name: "t",
        version: "0",
        description: "",
        permissions: Permissions::NONE,
        consent: &[],
        parameters: &[
            Parameter::required("url", "Where"),
            Parameter::optional("token", "Bearer").secret(),
            Parameter::optional("endpoint", "Base URL").default("https://api.vendor.example"),
        ],
        delivery: sluice_manifest::Delivery::IN_REQUEST,
    };

    #[test]
    fn declared_required_and_secret() {
        let decl = Declaration::from_json(&M.to_json()).unwrap();
        let url = ("url".to_string(), Param::plain("https://x".into()));
        assert!(check(&decl, std::slice::from_ref(&url)).is_ok());
        let err = check(&decl, &[url.clone(), ("urll".into(), Param::plain(1.into()))]).unwrap_err();
        assert!(err.to_string().contains("\"urll\"") && err.to_string().contains("url, token, endpoint"), "{err}");
        let err = check(&decl, &[url.clone(), ("token".into(), Param::plain("abc".into()))]).unwrap_err();
        assert_eq!(err, ParamError::SecretInClear("token".into()));
        assert!(check(&decl, &[url, ("token".into(), Param::secret("abc"))]).is_ok());
        assert!(matches!(check(&decl, &[]), Err(ParamError::Missing { .. })));
        assert_eq!(format!("{:?}", Param::secret("abc")), "\"[secret]\"");
    }

    #[test]
    fn a_default_is_declared_once_and_fills_an_outbound_pattern() {
        const V: Manifest = Manifest {
            permissions: Permissions { outbound: &["{endpoint}/v1/"], ..Permissions::NONE },
            ..M
        };
        let decl = Declaration::from_json(&V.to_json()).unwrap();
        let url = ("url".to_string(), Param::plain("https://x".into()));
        let params = check(&decl, std::slice::from_ref(&url)).unwrap();
        assert_eq!(params["endpoint"].value, "https://api.vendor.example", "the declared default");
        assert_eq!(resolved_permissions(&decl, &params).unwrap().outbound, ["https://api.vendor.example/v1/"]);
        let regional = check(&decl, &[url, ("endpoint".into(), Param::plain("https://eu.vendor.example/".into()))]).unwrap();
        assert_eq!(resolved_permissions(&decl, &regional).unwrap().outbound, ["https://eu.vendor.example/v1/"], "one slash");
    }

    #[test]
    fn a_flag_default_declares_the_type_the_operator_must_give() {
        const F: Manifest = Manifest {
            parameters: &[Parameter::optional("set_cookies", "Set cookies.").flag(true), Parameter::optional("days", "Days.").number(-730)],
            ..M
        };
        let decl = Declaration::from_json(&F.to_json()).unwrap();
        assert_eq!(check(&decl, &[]).unwrap()["set_cookies"].value, true, "the declared default, as a boolean");
        assert_eq!(check(&decl, &[]).unwrap()["days"].value, -730, "a number's, as a number");
        let days = check(&decl, &[("days".into(), Param::plain("30".into()))]).unwrap_err();
        assert!(days.to_string().contains("\"days\" takes a whole number"), "{days}");
        let given = |v: Value| check(&decl, &[("set_cookies".to_string(), Param::plain(v))]);
        assert_eq!(given(false.into()).unwrap()["set_cookies"].value, false);
        let err = given("no".into()).unwrap_err();
        assert!(err.to_string().contains("\"set_cookies\" takes true or false"), "{err}");
        assert!(check(&Declaration::from_json(&M.to_json()).unwrap(), &[("url".into(), Param::plain(3.into()))]).is_ok(), "no default: any type");
    }

    #[test]
    fn an_outbound_pattern_names_a_declared_plain_parameter() {
        let with = |outbound: &'static [&'static str]| {
            let m = Manifest { permissions: Permissions { outbound, ..Permissions::NONE }, ..M };
            Declaration::from_json(&m.to_json()).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(with(&["{nope}/"]).unwrap_err().contains("\"nope\" is not a declared parameter"));
        assert!(with(&["{token}/"]).unwrap_err().contains("is a secret"));
        assert!(with(&["{url"]).unwrap_err().contains("{name} at the start"));
        assert!(with(&["{url}/"]).is_ok());
    }
}
