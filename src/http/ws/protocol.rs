//! The messages of `graphql-transport-ws` and of the legacy `graphql-ws`
//! subprotocol, as the connection reads them.

use serde::Deserialize;
use serde_json::Value;

/// The two subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws` (the legacy subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The type of a message that carries a result.
    pub(super) fn next_type(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }
}

/// A message from the client, in either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    Subscribe {
        id: String,
        payload: OperationPayload,
    },
    Complete {
        id: String,
    },
    /// Legacy `start`.
    Start {
        id: String,
        payload: OperationPayload,
    },
    /// Legacy `stop`.
    Stop {
        id: String,
    },
    /// Legacy `connection_terminate`.
    ConnectionTerminate {},
}

/// The operation of a `subscribe` (or legacy `start`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OperationPayload {
    pub(super) query: String,
    #[serde(default)]
    pub(super) variables: Option<Value>,
    #[serde(default)]
    pub(super) operation_name: Option<String>,
}
