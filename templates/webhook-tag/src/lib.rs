//! A tag template that POSTs each event, as a JSON object, to a URL the operator configures.
//!
//! The template declares `outbound = ["*"]` because it cannot know the URL; the operator's grant
//! (for example `outbound = ["https://hooks.example.com/"]`) is what limits where it can send.
//! An optional `token` (a secret, so given as `${ENV_VAR}`) is sent as `Authorization: Bearer`.
//! A non-2xx answer fails the tag, so the host's trace shows the vendor's status.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use sluice_sdk::{Error, HttpRequest, Kind, Manifest, Parameter, Permissions, Tag, TagHost};

/// The webhook tag.
pub struct Webhook;

impl Tag for Webhook {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "webhook",
        version: env!("CARGO_PKG_VERSION"),
        description: "POSTs each event as JSON to a configured URL.",
        permissions: Permissions { event_data: &["*"], outbound: &["*"], logging: true, ..Permissions::NONE },
        consent: &[],
        parameters: &[
            Parameter::required("url", "Where to POST events."),
            Parameter::optional("token", "Bearer token sent in the Authorization header.").secret(),
        ],
    };

    fn fire(host: &TagHost) -> Result<(), Error> {
        let url = host.config().require_str("url")?;
        // Forwarded as the host serialised it: no parse and re-serialise inside the sandbox.
        let mut request = HttpRequest::post(url).json_text(host.event().all_json()?);
        if let Some(token) = host.config().str("token") {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = host.http().send(&request)?;
        if !(200..300).contains(&response.status) {
            host.log().warn(&format!("webhook answered HTTP {}", response.status));
        }
        response.error_for_status().map(drop)
    }
}

sluice_sdk::export_tag!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{HttpResponse, PermissionSet, Value, json};

    fn event() -> Value {
        json!({"event_name": "purchase", "value": 30, "currency": "EUR"})
    }

    fn operator_grant() -> PermissionSet {
        PermissionSet {
            event_data: vec!["*".into()],
            outbound: vec!["https://hooks.example.com/".into()],
            logging: true,
            ..Default::default()
        }
    }

    #[test]
    fn posts_the_event_as_json_with_the_token() {
        let mut mock = MockHost::new()
            .event(event())
            .param("url", "https://hooks.example.com/in")
            .secret_param("token", "s3cret")
            .grant(operator_grant())
            .stub("https://hooks.example.com/", HttpResponse::new(204, ""));
        mock.run_tag::<Webhook>().expect("fires");
        let sent = &mock.sent()[0];
        assert_eq!((sent.method.as_str(), sent.url.as_str()), ("POST", "https://hooks.example.com/in"));
        assert!(sent.headers.contains(&("authorization".into(), "Bearer s3cret".into())));
        assert!(sent.headers.contains(&("content-type".into(), "application/json".into())));
        let body: Value = serde_json::from_slice(&sent.body).expect("json body");
        assert_eq!(body, event());
    }

    #[test]
    fn a_url_outside_the_operator_grant_is_refused_and_nothing_is_sent() {
        let mut mock = MockHost::new()
            .event(event())
            .param("url", "https://attacker.example.net/steal")
            .grant(operator_grant());
        let err = mock.run_tag::<Webhook>().unwrap_err();
        assert!(err.is_permission_denied(), "{err}");
        assert!(mock.sent().is_empty());
        assert_eq!(mock.denials().len(), 1);
    }

    #[test]
    fn a_vendor_error_fails_the_tag_and_is_logged() {
        let mut mock = MockHost::new()
            .event(event())
            .param("url", "https://hooks.example.com/in")
            .grant(operator_grant())
            .stub("https://hooks.example.com/", HttpResponse::new(503, "down"));
        let err = mock.run_tag::<Webhook>().unwrap_err();
        assert_eq!(err, Error::Failed("HTTP 503: down".into()));
        assert_eq!(mock.logs().len(), 1);
    }

    #[test]
    fn a_missing_url_parameter_is_a_clear_error() {
        let mut mock = MockHost::new().event(event()).grant(operator_grant());
        let err = mock.run_tag::<Webhook>().unwrap_err().to_string();
        assert!(err.contains("the host refuses to load this configuration") && err.contains("\"url\" is required"), "{err}");
    }
}
