//! A GraphQL websocket client for tests: speaks `graphql-transport-ws` (or
//! the legacy `graphql-ws`) over tokio-tungstenite to the real server.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one message: a safety net against hangs, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A protocol message.
    Message(Value),
    /// The close frame's code (1005 when none was given).
    Closed(u16),
}

/// One websocket connection to the server.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Whether protocol pings are answered automatically.
    pub answer_pings: bool,
}

impl WsClient {
    /// Opens `/graphql` at `addr` with `protocol`.
    pub async fn connect(addr: std::net::SocketAddr, protocol: &str) -> WsClient {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            protocol,
            "the server picks the subprotocol asked for"
        );
        WsClient {
            socket,
            answer_pings: true,
        }
    }

    /// Connects with `graphql-transport-ws` and completes the handshake.
    pub async fn ready(addr: std::net::SocketAddr) -> WsClient {
        let mut client = WsClient::connect(addr, "graphql-transport-ws").await;
        client
            .send(json!({"type": "connection_init", "payload": {}}))
            .await;
        assert_eq!(client.message().await["type"], "connection_ack");
        client
    }

    /// Connects and sends `connection_init` with `authorization`; the caller
    /// reads the answer (an ack, or a close).
    pub async fn init_with(addr: std::net::SocketAddr, authorization: Option<&str>) -> WsClient {
        let mut client = WsClient::connect(addr, "graphql-transport-ws").await;
        let payload = match authorization {
            Some(value) => json!({ "Authorization": value }),
            None => json!({}),
        };
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        client
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next message or close; pings are answered unless told otherwise.
    pub async fn receive(&mut self) -> Received {
        match self.receive_text().await {
            Ok((_, message)) => Received::Message(message),
            Err(code) => Received::Closed(code),
        }
    }

    /// The next message as the server wrote it (pings answered), which
    /// must not be a close.
    pub async fn next_text(&mut self) -> String {
        match self.receive_text().await {
            Ok((text, _)) => text,
            Err(code) => panic!("closed with {code} while waiting for a message"),
        }
    }

    /// The next message, as written and parsed, or the close code.
    async fn receive_text(&mut self) -> Result<(String, Value), u16> {
        // One deadline for the whole wait: answered pings do not extend it.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("the server said something in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON message");
                    if message["type"] == "ping" && self.answer_pings {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Ok((text.to_string(), message));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(1006),
            }
        }
    }

    /// The next message, which must not be a close.
    pub async fn message(&mut self) -> Value {
        match self.receive().await {
            Received::Message(message) => message,
            Received::Closed(code) => panic!("closed with {code} while waiting for a message"),
        }
    }

    /// The close code the server ends with, skipping messages before it.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            if let Received::Closed(code) = self.receive().await {
                return code;
            }
        }
    }

    /// Starts operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// The payload `data` of the next `next` message of `id`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        let message = self.message().await;
        assert_eq!(message["id"], id, "{message}");
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"].clone()
    }

    /// The next `events` event of `id`.
    pub async fn next_event(&mut self, id: &str) -> Value {
        self.next_data(id).await["events"].clone()
    }

    /// Closes the connection without ceremony.
    pub async fn drop_connection(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Opens `/graphql` over a socket whose receive buffer is `bytes`, and
    /// completes the handshake: a slow reader whose kernel does not soak up
    /// megabytes for it, so what the server holds is what the test sees.
    pub async fn ready_with_receive_buffer(addr: std::net::SocketAddr, bytes: u32) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr).await.expect("tcp connects");
        stream.set_nodelay(true).unwrap();
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        let mut client = WsClient {
            socket,
            answer_pings: true,
        };
        client
            .send(json!({"type": "connection_init", "payload": {}}))
            .await;
        assert_eq!(client.message().await["type"], "connection_ack");
        client
    }

    /// Reads everything the server sends into memory as soon as it arrives,
    /// as engine clients (Python gql, Node graphql-ws) do; the test then
    /// handles messages at its own pace.
    pub fn eager(self) -> EagerReader {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (mut sink, mut stream) = self.socket.split();
        let task = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(&text).expect("JSON message");
                if message["type"] == "ping" {
                    let pong = json!({"type": "pong"}).to_string();
                    if sink.send(Message::Text(pong.into())).await.is_err() {
                        break;
                    }
                    continue;
                }
                if tx.send((std::time::Instant::now(), message)).is_err() {
                    break;
                }
            }
        });
        EagerReader {
            rx,
            task,
            last_arrival: None,
        }
    }
}

/// A websocket whose messages are read eagerly into an in-memory queue.
pub struct EagerReader {
    rx: tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, Value)>,
    task: tokio::task::JoinHandle<()>,
    last_arrival: Option<std::time::Instant>,
}

impl EagerReader {
    /// The next `events` event of `id`, from memory (waiting for it if none is there).
    pub async fn next_event(&mut self, id: &str) -> Value {
        let (arrived, message) = tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("the server sent an event in time")
            .expect("the connection is open");
        self.last_arrival = Some(arrived);
        assert_eq!(message["id"], id, "{message}");
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"]["events"].clone()
    }

    /// The next `events` event of `id` if one comes within `wait`.
    pub async fn next_event_within(&mut self, id: &str, wait: Duration) -> Option<Value> {
        let (arrived, message) = tokio::time::timeout(wait, self.rx.recv()).await.ok()??;
        self.last_arrival = Some(arrived);
        assert_eq!(message["id"], id, "{message}");
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        Some(message["payload"]["data"]["events"].clone())
    }

    /// When the last message taken arrived from the socket.
    pub fn last_arrival(&self) -> Option<std::time::Instant> {
        self.last_arrival
    }

    /// How many messages arrived and wait in memory, unhandled.
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }

    /// Drops the connection without a word, as a crashed process would.
    pub fn kill(self) {}
}

impl Drop for EagerReader {
    /// A reader dropped (its engine gone) takes its connection with it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The subscription every engine in these tests uses.
pub const ENGINE_EVENTS: &str = "subscription($run: UUID!, $engine: UUID, $types: [String!], $after: Int, $max: Int, $lease: Int) {
    events(runId: $run, engineId: $engine, eventTypes: $types, afterSequence: $after, maxInFlight: $max, leaseSeconds: $lease) {
        id sequence priority eventType payload partitionKey delivery { engineId attempt leaseId leaseExpiresAt } } }";
