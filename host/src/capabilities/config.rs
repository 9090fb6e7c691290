//! `sluice:template/config`: the template's own parameters.

use crate::bindings::config::Host;
use crate::state::Invocation;

impl Host for Invocation {
    async fn get(&mut self, name: String) -> Option<String> {
        self.template.params.get(&name).map(|p| crate::json_text(&p.value))
    }
}
