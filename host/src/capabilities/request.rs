//! `sluice:template/request`: reading the incoming request.
//!
//! With `ad_user_data` not granted, every accessor answers through the personal-data
//! minimiser ([`sluice_policy::personal_data`], the same rules the mock host applies): the
//! forwarding and credential headers and the visitor's IP are hidden, click ids and values
//! that are personal data (emails, IPs, phone numbers) are removed from the headers — `cookie`
//! and `referer` included —, the cookies, the query and the body.

use crate::bindings::request::Host;
use crate::bindings::types::Error;
use crate::state::Invocation;

impl Invocation {
    fn minimiser(&self) -> Option<&sluice_policy::personal_data::Minimiser> {
        self.personal_data_removed.then(|| self.services.consent.policy().minimiser())
    }
}

impl Host for Invocation {
    async fn method(&mut self) -> String {
        self.request.method.clone()
    }

    async fn path(&mut self) -> String {
        self.request.path.clone()
    }

    async fn query_string(&mut self) -> Result<String, Error> {
        self.allow(|g| g.check_query())?;
        Ok(match self.minimiser() {
            Some(m) => m.query(&self.request.query),
            None => self.request.query.clone(),
        })
    }

    async fn query_param(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_query())?;
        let value = form_urlencoded::parse(self.request.query.as_bytes()).find(|(k, _)| *k == name).map(|(_, v)| v.into_owned());
        Ok(match self.minimiser() {
            Some(m) => value.and_then(|v| m.query_param(&name, &v)),
            None => value,
        })
    }

    async fn header(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_request_header(&name))?;
        let values: Vec<&str> =
            self.request.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        let value = (!values.is_empty()).then(|| values.join(", "));
        Ok(match self.minimiser() {
            Some(m) => value.and_then(|v| m.header(&name, &v)),
            None => value,
        })
    }

    async fn cookie(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.allow(|g| g.check_cookie(&name))?;
        let values = crate::state::cookie_values(&self.request.headers, &name);
        Ok(match self.minimiser() {
            Some(m) => values.into_iter().filter_map(|v| m.cookie(&name, &v)).collect(),
            None => values,
        })
    }

    async fn body(&mut self) -> Result<Vec<u8>, Error> {
        self.allow(|g| g.check_body())?;
        Ok(match self.minimiser() {
            Some(m) => m.body(&self.request.body),
            None => self.request.body.to_vec(),
        })
    }

    async fn remote_address(&mut self) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_remote_address())?;
        if self.personal_data_removed {
            return Ok(None);
        }
        Ok(self.request.remote_addr.map(|ip| ip.to_string()))
    }
}
