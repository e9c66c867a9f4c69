//! `workshop-bridge mcp`: the agent's side of the Workshop as a Model Context Protocol
//! server over standard input and output.
//!
//! The files are the contract: the tools read the same state file, inbox and outbox the
//! bridge serves, so they work whether or not a bridge is running; only presence
//! (`who_is_here`, and whether a bark was heard) asks the running bridge, over its status
//! API. `server.rs` holds the tools and resources, `inbox.rs` reads and confirms visitor
//! messages, `state.rs` reads and patches the state file, `outbox.rs` drops barks, and
//! `status.rs` asks the running bridge.

mod inbox;
mod outbox;
mod server;
mod state;
mod status;

use rmcp::ServiceExt;

use crate::{Config, Error};

/// Serves the MCP tools over standard input and output until the client closes them.
/// Standard output belongs to the protocol: log to standard error only.
pub async fn serve_stdio(config: Config) -> Result<(), Error> {
    let workshop = server::Workshop::new(&config);
    let service = workshop
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Mcp {
            message: e.to_string(),
        })?;
    tracing::info!(
        state_file = %config.state_file.display(),
        inbox = %config.inbox_dir.display(),
        outbox = %config.outbox_dir.display(),
        "MCP server ready on standard input and output"
    );
    let ended = service.waiting().await;
    workshop.stop();
    ended.map(drop).map_err(|e| Error::Mcp {
        message: e.to_string(),
    })
}
