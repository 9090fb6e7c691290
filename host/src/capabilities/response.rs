//! `sluice:template/response`: building the browser's response.
//!
//! The rules (which headers, which statuses, what a cookie may hold) are
//! [`sluice_policy::response`]'s, shared with the mock host.

use sluice_policy::response::{self as rules, CookieSpec};

use crate::bindings::response::{Cookie, Host, SameSite};
use crate::bindings::types::Error;
use crate::state::Invocation;

fn invalid(e: rules::ResponseRuleError) -> Error {
    Error::Invalid(e.to_string())
}

fn not_sent(sent: bool) -> Result<(), Error> {
    if sent {
        Err(Error::Failed("the response was already sent (the client answers before tags run)".into()))
    } else {
        Ok(())
    }
}

impl Host for Invocation {
    async fn set_status(&mut self, status: u16) -> Result<(), Error> {
        self.in_request("the response")?;
        self.allow(|g| g.check_response_status())?;
        rules::check_status(status).map_err(invalid)?;
        let mut r = self.response();
        not_sent(r.sent)?;
        r.status = status;
        Ok(())
    }

    async fn set_header(&mut self, name: String, value: String) -> Result<(), Error> {
        self.in_request("the response")?;
        self.allow(|g| g.check_response_header(&name))?;
        let name = rules::check_header(&name, &value).map_err(invalid)?;
        let mut r = self.response();
        not_sent(r.sent)?;
        rules::check_header_room(r.headers.iter().map(|(n, _)| n.as_str()), &name).map_err(invalid)?;
        r.headers.retain(|(n, _)| *n != name);
        r.headers.push((name, value));
        Ok(())
    }

    async fn set_body(&mut self, body: Vec<u8>) -> Result<(), Error> {
        self.in_request("the response")?;
        self.allow(|g| g.check_response_body())?;
        rules::check_body(body.len()).map_err(invalid)?;
        let mut r = self.response();
        not_sent(r.sent)?;
        r.body = body;
        Ok(())
    }

    async fn set_cookie(&mut self, c: Cookie) -> Result<(), Error> {
        self.in_request("the response")?;
        self.allow(|g| g.check_response_cookie(&c.name))?;
        let same_site = c.same_site.map(|s| match s {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        });
        let spec = CookieSpec {
            name: &c.name,
            value: &c.value,
            domain: c.domain.as_deref(),
            path: c.path.as_deref(),
            max_age: c.max_age,
            secure: c.secure,
            http_only: c.http_only,
            same_site,
        };
        let line = rules::cookie_line(&spec).map_err(invalid)?;
        let mut r = self.response();
        not_sent(r.sent)?;
        rules::check_cookie_room(r.cookies.len()).map_err(invalid)?;
        r.cookies.push(line);
        Ok(())
    }
}
