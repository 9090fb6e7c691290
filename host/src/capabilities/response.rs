//! `sluice:template/response`: building the browser's response.

use crate::bindings::response::{Cookie, Host, SameSite};
use crate::bindings::types::Error;
use crate::state::Invocation;

/// Headers the host owns: framing, and cookies (which go through `set-cookie`).
const FORBIDDEN: &[&str] = &["content-length", "transfer-encoding", "connection", "set-cookie", "upgrade", "trailer"];

fn not_sent(sent: bool) -> Result<(), Error> {
    if sent {
        Err(Error::Failed("the response was already sent (the client answers before tags run)".into()))
    } else {
        Ok(())
    }
}

impl Host for Invocation {
    async fn set_status(&mut self, status: u16) -> Result<(), Error> {
        self.allow(|g| g.check_response_status())?;
        if !(100..=599).contains(&status) {
            return Err(Error::Invalid(format!("{status} is not an HTTP status code")));
        }
        let mut r = self.response();
        not_sent(r.sent)?;
        r.status = status;
        Ok(())
    }

    async fn set_header(&mut self, name: String, value: String) -> Result<(), Error> {
        self.allow(|g| g.check_response_header(&name))?;
        let name = name.to_ascii_lowercase();
        if FORBIDDEN.contains(&name.as_str()) {
            return Err(Error::Invalid(format!("header {name:?} is set by the host (use set-cookie for cookies)")));
        }
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(Error::Invalid(format!("value of header {name:?} has characters HTTP does not allow")));
        }
        let mut r = self.response();
        not_sent(r.sent)?;
        r.headers.retain(|(n, _)| *n != name);
        r.headers.push((name, value));
        Ok(())
    }

    async fn set_body(&mut self, body: Vec<u8>) -> Result<(), Error> {
        self.allow(|g| g.check_response_body())?;
        let mut r = self.response();
        not_sent(r.sent)?;
        r.body = body;
        Ok(())
    }

    async fn set_cookie(&mut self, c: Cookie) -> Result<(), Error> {
        self.allow(|g| g.check_response_cookie(&c.name))?;
        let mut builder = cookie::Cookie::build((c.name.clone(), c.value.clone())).secure(c.secure).http_only(c.http_only);
        if let Some(domain) = c.domain {
            builder = builder.domain(domain);
        }
        if let Some(path) = c.path {
            builder = builder.path(path);
        }
        if let Some(age) = c.max_age {
            builder = builder.max_age(cookie::time::Duration::seconds(age));
        }
        if let Some(s) = c.same_site {
            builder = builder.same_site(match s {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        }
        let line = builder.build().encoded().to_string();
        if http::HeaderValue::from_str(&line).is_err() {
            return Err(Error::Invalid(format!("cookie {:?} has characters HTTP does not allow", c.name)));
        }
        let mut r = self.response();
        not_sent(r.sent)?;
        r.cookies.push(line);
        Ok(())
    }
}
