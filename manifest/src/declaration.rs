//! A template's declaration as the host reads it, and the permission-set shape shared with
//! operators' grants.

use serde::{Deserialize, Serialize};

use crate::{KeyPattern, Kind, UrlPattern, UrlPatternError};

/// What a template says about itself, decoded from its [`crate::MANIFEST_SECTION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Client or tag.
    pub kind: Kind,
    /// Short machine name.
    pub name: String,
    /// Template version.
    pub version: String,
    /// One sentence for operators.
    #[serde(default)]
    pub description: String,
    /// Everything the template may ask for.
    pub permissions: PermissionSet,
    /// Consent purposes a tag needs by default.
    #[serde(default)]
    pub consent: Vec<String>,
    /// The parameters the operator configures.
    #[serde(default)]
    pub parameters: Vec<ParameterSpec>,
    /// A tag's phases and batch limits.
    #[serde(default)]
    pub delivery: crate::DeliverySpec,
}

/// A declared parameter (see [`crate::Parameter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    /// Key in the container config's `params` table.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Missing → the host refuses to start.
    #[serde(default)]
    pub required: bool,
    /// Must be given as `${ENV_VAR}`; never printed.
    #[serde(default)]
    pub secret: bool,
    /// The value when the operator sets none (a string, a boolean or a whole number, which is
    /// then the parameter's type; never for a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// A set of permissions: what a template declares, or what an operator grants.
///
/// The operator writes the same keys under `[client.grants]` / `[tag.grants]` in the container
/// config, so one vocabulary covers both sides. Name lists accept `"*"` for "any" (for
/// `request_headers`, any but the credential headers, [`crate::CREDENTIAL_HEADERS`], which both
/// sides must name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionSet {
    /// Request headers, by case-insensitive name.
    pub request_headers: Vec<String>,
    /// The query string.
    pub query: bool,
    /// Request cookies, by name.
    pub cookies: Vec<String>,
    /// The request body.
    pub body: bool,
    /// The visitor's IP address.
    pub remote_address: bool,
    /// The consent state.
    pub consent: bool,
    /// Event-data key patterns.
    pub event_data: Vec<String>,
    /// Response headers, by name.
    pub response_headers: Vec<String>,
    /// Response cookies, by name.
    pub response_cookies: Vec<String>,
    /// Outbound URL patterns.
    pub outbound: Vec<String>,
    /// Per-template storage.
    pub storage: bool,
    /// Log lines.
    pub logging: bool,
}

/// Why a declaration or grant is not usable. Messages name the offending entry and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationError {
    /// The manifest bytes are not the JSON a manifest should be.
    #[error("the template manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// An outbound URL pattern does not parse.
    #[error("outbound pattern {pattern:?}: {source}")]
    Outbound {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        source: UrlPatternError,
    },
    /// A header name is not a valid HTTP token.
    #[error("{list} entry {name:?} is not a valid HTTP header name (letters, digits and -_.!#$%&'*+^`|~ only)")]
    HeaderName {
        /// `request_headers` or `response_headers`.
        list: &'static str,
        /// The entry.
        name: String,
    },
    /// A consent purpose name that is not one of the seven.
    #[error("consent purpose {name:?} is unknown: use one of {}", crate::Purpose::all_names())]
    Purpose {
        /// The name as written.
        name: String,
    },
    /// The declared phases cannot work.
    #[error("delivery: {0}")]
    Delivery(&'static str),
    /// An outbound pattern's `{parameter}` cannot be filled in.
    #[error("outbound pattern {pattern:?}: {why}")]
    Placeholder {
        /// The pattern as declared.
        pattern: String,
        /// What is wrong, and the fix.
        why: String,
    },
    /// A declared id cookie cannot work as declared.
    #[error("id cookie {name:?}: {why}")]
    IdCookie {
        /// The cookie's name.
        name: String,
        /// What is wrong, and the fix.
        why: String,
    },
    /// An empty or malformed name / key pattern.
    #[error("{list} entry {name:?} is not valid: {why}")]
    Entry {
        /// Which list.
        list: &'static str,
        /// The entry.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

impl Declaration {
    /// Decodes and validates a manifest (the bytes of a template's custom section).
    pub fn from_json(bytes: &[u8]) -> Result<Self, DeclarationError> {
        let decl: Declaration = serde_json::from_slice(bytes)?;
        // Patterns built from a parameter are checked once it has a value (at load).
        let mut fixed = decl.permissions.clone();
        fixed.outbound.retain(|p| !p.starts_with('{'));
        fixed.validate()?;
        for pattern in decl.permissions.outbound.iter().filter(|p| p.starts_with('{')) {
            decl.placeholder(pattern)?;
        }
        if let Some(p) = decl.parameters.iter().find(|p| p.secret && p.default.is_some()) {
            return Err(DeclarationError::Entry { list: "parameters", name: p.name.clone(), why: "a secret parameter cannot have a default" });
        }
        if let Some(p) = decl.parameters.iter().find(|p| p.default.as_ref().is_some_and(|d| !d.is_string() && !d.is_boolean() && !d.is_i64())) {
            return Err(DeclarationError::Entry { list: "parameters", name: p.name.clone(), why: "a default is a string, a boolean or a whole number" });
        }
        if let Some(name) = decl.consent.iter().find(|n| crate::Purpose::named(n).is_none()) {
            return Err(DeclarationError::Purpose { name: name.clone() });
        }
        decl.delivery.validate().map_err(DeclarationError::Delivery)?;
        decl.validate_id_cookies()?;
        Ok(decl)
    }

    /// A tag's id cookies: valid patterns, within what it declares it reads and sets, switched
    /// by a declared flag.
    fn validate_id_cookies(&self) -> Result<(), DeclarationError> {
        for c in &self.delivery.id_cookies {
            let fail = |why: String| DeclarationError::IdCookie { name: c.name.clone(), why };
            if self.kind != Kind::Tag {
                return Err(fail("only tags declare id cookies (a client sets its cookies itself)".into()));
            }
            c.validate().map_err(fail)?;
            let p = &self.permissions;
            if !p.cookies.contains(&c.name) || !p.response_cookies.contains(&c.name) {
                return Err(fail("list it in permissions.cookies and permissions.response_cookies: the host reads and sets it for the tag".into()));
            }
            if c.click_param.is_some() && !p.event_data.iter().any(|k| KeyPattern::parse(k).is_ok_and(|k| k.covers("page_location"))) {
                return Err(fail("a click id is read from page_location: list it in permissions.event_data".into()));
            }
            if let Some(flag) = &c.enabled_by
                && !self.parameters.iter().any(|p| &p.name == flag && p.default.as_ref().is_some_and(serde_json::Value::is_boolean))
            {
                return Err(fail(format!("enabled_by names {flag:?}: declare it as Parameter::optional({flag:?}, ..).flag(true)")));
            }
        }
        Ok(())
    }

    /// The declared parameter with this name.
    pub fn parameter(&self, name: &str) -> Option<&ParameterSpec> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// For an outbound pattern written `{name}rest`: the parameter and the rest.
    fn placeholder<'a>(&self, pattern: &'a str) -> Result<(&ParameterSpec, &'a str), DeclarationError> {
        let fail = |why: String| DeclarationError::Placeholder { pattern: pattern.to_string(), why };
        let Some((name, rest)) = pattern.strip_prefix('{').and_then(|p| p.split_once('}')) else {
            return Err(fail("a parameter is written {name} at the start, e.g. \"{endpoint}/\"".into()));
        };
        let spec = self.parameter(name).ok_or_else(|| fail(format!("{name:?} is not a declared parameter")))?;
        if spec.secret {
            return Err(fail(format!("{name:?} is a secret: outbound patterns are shown and logged, so they cannot hold one")));
        }
        if rest.contains('{') {
            return Err(fail("only one parameter, at the start".into()));
        }
        Ok((spec, rest))
    }

    /// The declared permissions with each outbound `{parameter}` filled in from `value_of`
    /// (the parameter as configured, or its default) — what the host and the mock host grant
    /// against. So a vendor tag declares `"{endpoint}/"` and is allowed exactly the host its
    /// `endpoint` names, instead of `"*"`.
    pub fn resolved_permissions(&self, value_of: impl Fn(&str) -> Option<String>) -> Result<PermissionSet, DeclarationError> {
        let mut set = self.permissions.clone();
        for pattern in set.outbound.iter_mut().filter(|p| p.starts_with('{')) {
            let (spec, rest) = self.placeholder(pattern)?;
            let Some(value) = value_of(&spec.name) else {
                return Err(DeclarationError::Placeholder {
                    pattern: pattern.clone(),
                    why: format!("parameter {:?} has no value: set it under params", spec.name),
                });
            };
            let resolved = format!("{}{rest}", value.trim_end_matches('/'));
            UrlPattern::parse(&resolved).map_err(|source| DeclarationError::Placeholder {
                pattern: pattern.clone(),
                why: format!("with {}={value:?} it reads {resolved:?}: {source}", spec.name),
            })?;
            *pattern = resolved;
        }
        Ok(set)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
}

impl PermissionSet {
    /// Checks every entry: header names are HTTP tokens, URL patterns parse, key patterns and
    /// cookie names are non-empty.
    pub fn validate(&self) -> Result<(), DeclarationError> {
        for (list, names) in
            [("request_headers", &self.request_headers), ("response_headers", &self.response_headers)]
        {
            if let Some(name) = names.iter().find(|n| !is_token(n)) {
                return Err(DeclarationError::HeaderName { list, name: name.clone() });
            }
        }
        for (list, names) in [("cookies", &self.cookies), ("response_cookies", &self.response_cookies)] {
            if let Some(name) = names.iter().find(|n| !is_token(n)) {
                return Err(DeclarationError::Entry {
                    list,
                    name: name.clone(),
                    why: "cookie names are non-empty HTTP tokens (no spaces, ';' or '=')",
                });
            }
        }
        for key in &self.event_data {
            KeyPattern::parse(key).map_err(|why| DeclarationError::Entry {
                list: "event_data",
                name: key.clone(),
                why,
            })?;
        }
        for pattern in &self.outbound {
            UrlPattern::parse(pattern).map_err(|source| DeclarationError::Outbound {
                pattern: pattern.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_permission_keys_are_rejected_not_ignored() {
        let err = toml_like(r#"{"request_header": ["x"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `request_header`"), "{err}");
    }

    #[test]
    fn an_id_cookie_must_be_within_what_the_tag_declares() {
        let decl = |permissions: serde_json::Value, parameters: serde_json::Value| {
            let json = serde_json::json!({
                "kind": "tag", "name": "t", "version": "1", "permissions": permissions, "parameters": parameters,
                "delivery": {"fire": false, "batch": {"max_items": 1, "max_bytes": 1, "max_wait_ms": 0, "max_age_secs": 1},
                             "id_cookies": [{"name": "_fbc", "value": "fb.1.{now_ms}.{click_id}", "click_param": "fbclid",
                                             "max_age_days": 90, "enabled_by": "set_cookies"}]}
            });
            Declaration::from_json(json.to_string().as_bytes()).map(|_| ()).map_err(|e| e.to_string())
        };
        let flag = serde_json::json!([{"name": "set_cookies", "description": "", "required": false, "secret": false, "default": true}]);
        let all = serde_json::json!({"cookies": ["_fbc"], "response_cookies": ["_fbc"], "event_data": ["page_location"]});
        assert_eq!(decl(all.clone(), flag.clone()), Ok(()));
        let unset = decl(serde_json::json!({"cookies": ["_fbc"], "event_data": ["*"]}), flag.clone()).unwrap_err();
        assert!(unset.contains("\"_fbc\"") && unset.contains("permissions.response_cookies"), "{unset}");
        let unseen = decl(serde_json::json!({"cookies": ["_fbc"], "response_cookies": ["_fbc"]}), flag).unwrap_err();
        assert!(unseen.contains("page_location"), "{unseen}");
        let no_flag = decl(all, serde_json::json!([])).unwrap_err();
        assert!(no_flag.contains(".flag(true)"), "{no_flag}");
    }

    fn toml_like(json: &str) -> Result<PermissionSet, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn validation_names_the_bad_entry() {
        let set = PermissionSet { request_headers: vec!["bad header".into()], ..Default::default() };
        let msg = set.validate().unwrap_err().to_string();
        assert!(msg.contains("request_headers") && msg.contains("bad header"), "{msg}");

        let set = PermissionSet { outbound: vec!["graph.facebook.com".into()], ..Default::default() };
        let msg = set.validate().unwrap_err().to_string();
        assert!(msg.contains("graph.facebook.com") && msg.contains("https://"), "{msg}");
    }
}
