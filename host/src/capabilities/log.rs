//! `sluice:template/log`: template log lines, tagged with template and request id. Like every
//! line the process writes they pass through the output masker ([`crate::output`]), so a
//! template that logs its configuration does not leak a token into the operator's logs.

use crate::bindings::log::{Host, Level};
use crate::bindings::types::Error;
use crate::state::Invocation;

/// Longest line kept; the rest is cut.
const MAX_LINE: usize = 4096;

impl Host for Invocation {
    async fn write(&mut self, level: Level, message: String) -> Result<(), Error> {
        self.allow(|g| g.check_logging())?;
        let mut line = message;
        if line.len() > MAX_LINE {
            line.truncate(line.floor_char_boundary(MAX_LINE));
            line.push('…');
        }
        let (id, name) = (&self.request.id, &self.template.name);
        match level {
            Level::Trace => tracing::trace!(request_id = %id, template = %name, "{line}"),
            Level::Debug => tracing::debug!(request_id = %id, template = %name, "{line}"),
            Level::Info => tracing::info!(request_id = %id, template = %name, "{line}"),
            Level::Warn => tracing::warn!(request_id = %id, template = %name, "{line}"),
            Level::Error => tracing::error!(request_id = %id, template = %name, "{line}"),
        }
        Ok(())
    }
}
