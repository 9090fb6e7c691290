//! `sluice:template/request`: reading the incoming request.
//!
//! With `ad_user_data` not granted, every accessor answers through the personal-data
//! minimiser ([`sluice_policy::personal_data`], the same rules the mock host applies): the
//! forwarding and credential headers and the visitor's IP are hidden, click ids and values
//! that are personal data (emails, IPs, phone numbers) are removed from the headers — `cookie`
//! and `referer` included —, the cookies, the query and the body.

use sluice_policy::request::Reads;

use crate::bindings::request::Host;
use crate::bindings::types::Error;
use crate::state::Invocation;

impl Invocation {
    /// The accessors' rules for this invocation: minimising when `ad_user_data` is not granted.
    fn reads(&self) -> Reads<'_> {
        Reads { minimiser: self.personal_data_removed.then(|| self.services.consent.policy().minimiser()) }
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
        self.in_request("the request")?;
        self.allow(|g| g.check_query())?;
        Ok(self.reads().query_string(&*self.request))
    }

    async fn query_param(&mut self, name: String) -> Result<Option<String>, Error> {
        self.in_request("the request")?;
        self.allow(|g| g.check_query())?;
        Ok(self.reads().query_param(&*self.request, &name))
    }

    async fn header(&mut self, name: String) -> Result<Option<String>, Error> {
        self.in_request("the request")?;
        self.allow(|g| g.check_request_header(&name))?;
        Ok(self.reads().header(&*self.request, &name))
    }

    async fn cookie(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.in_request("the request")?;
        self.allow(|g| g.check_cookie(&name))?;
        Ok(self.reads().cookie(&*self.request, &name))
    }

    async fn body(&mut self) -> Result<Vec<u8>, Error> {
        self.in_request("the request")?;
        self.allow(|g| g.check_body())?;
        Ok(self.reads().body(&*self.request))
    }

    async fn remote_address(&mut self) -> Result<Option<String>, Error> {
        self.in_request("the request")?;
        self.allow(|g| g.check_remote_address())?;
        Ok(self.reads().remote_address(&*self.request))
    }
}
