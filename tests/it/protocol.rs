//! The websocket protocol itself: handshake, close codes, pings, the legacy
//! subprotocol, errors, limits and fairness between subscriptions.

use serde_json::json;

use crate::both_backends;
use crate::common::ws::{ENGINE_EVENTS, Received, WsClient};
use crate::common::{Backend, TestServer, event_type, publish, register, scenario};

both_backends!(
    close_codes_follow_graphql_transport_ws,
    idle_connections_are_pinged_and_dropped_when_silent,
    the_legacy_subprotocol_works,
    bad_subscriptions_get_an_error_message,
    a_busy_subscription_does_not_starve_another,
    shutdown_closes_websockets_with_1001,
    websocket_connections_are_limited,
);

async fn close_codes_follow_graphql_transport_ws(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.realtime.ws_init_timeout_ms = 300;
    })
    .await;
    let s = scenario(&server, "codes").await;

    // 4400: not a protocol message.
    let mut ws = WsClient::connect(server.addr, "graphql-transport-ws").await;
    ws.send_text("{not json".into()).await;
    assert_eq!(ws.close_code().await, 4400);
    let mut ws = WsClient::ready(server.addr).await;
    ws.send(json!({"type": "no_such_type"})).await;
    assert_eq!(ws.close_code().await, 4400);

    // 4401: subscribe before the connection is acknowledged.
    let mut ws = WsClient::connect(server.addr, "graphql-transport-ws").await;
    ws.subscribe("1", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    assert_eq!(ws.close_code().await, 4401);

    // 4408: no connection_init in time.
    let mut ws = WsClient::connect(server.addr, "graphql-transport-ws").await;
    assert_eq!(ws.close_code().await, 4408);

    // 4429: a second connection_init.
    let mut ws = WsClient::ready(server.addr).await;
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.close_code().await, 4429);

    // 4409: a second subscription under an id in use; the id is free again
    // once its operation has completed.
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe("q", "{ __typename }", json!({})).await;
    assert_eq!(ws.next_data("q").await, json!({"__typename": "QueryRoot"}));
    assert_eq!(ws.message().await, json!({"id": "q", "type": "complete"}));
    ws.subscribe("q", "{ __typename }", json!({})).await;
    assert_eq!(ws.next_data("q").await, json!({"__typename": "QueryRoot"}));
    assert_eq!(ws.message().await["type"], "complete");
    ws.subscribe("live", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.subscribe("live", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    assert_eq!(ws.close_code().await, 4409);

    // The client's own ping is answered, with its payload.
    let mut ws = WsClient::ready(server.addr).await;
    ws.send(json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(
        ws.message().await,
        json!({"type": "pong", "payload": {"n": 1}})
    );
    // A completed subscription stops: a later event is not sent.
    ws.subscribe("c", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.send(json!({"id": "c", "type": "complete"})).await;
    // The server reads in order: once the ping is answered, the complete is done.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.message().await["type"], "pong");
    event_type(&server, "tick", json!(null), 0, 1).await;
    publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    ws.send(json!({"type": "ping"})).await;
    let message = ws.message().await;
    assert_eq!(
        message["type"], "pong",
        "nothing for the completed subscription: {message}"
    );
}

async fn idle_connections_are_pinged_and_dropped_when_silent(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.realtime.ws_ping_interval_ms = 200;
        config.realtime.ws_pong_timeout_ms = 300;
    })
    .await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.answer_pings = false;
    assert_eq!(ws.message().await, json!({"type": "ping"}));
    ws.send(json!({"type": "pong"})).await;
    // Answered: the connection lives on and is pinged again.
    assert_eq!(ws.message().await, json!({"type": "ping"}));
    // Unanswered: it is dropped.
    assert_eq!(ws.close_code().await, 1011);

    // An engine that answers stays connected through many ping intervals.
    let mut ws = WsClient::ready(server.addr).await;
    for _ in 0..3 {
        ws.send(json!({"type": "ping"})).await;
        assert_eq!(ws.message().await["type"], "pong");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn the_legacy_subprotocol_works(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "legacy").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let mut ws = WsClient::connect(server.addr, "graphql-ws").await;
    ws.send(json!({"type": "connection_init", "payload": {}}))
        .await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    assert_eq!(ws.message().await["type"], "ka");
    ws.send(json!({"id": "1", "type": "start", "payload": {
        "query": "subscription($r: UUID!, $a: Int) { events(runId: $r, afterSequence: $a) { sequence eventType } }",
        "variables": {"r": s.run, "a": 0}}}))
        .await;
    let data = ws.message().await;
    assert_eq!(data["type"], "data");
    assert_eq!(
        data["payload"]["data"]["events"],
        json!({"sequence": 1, "eventType": "run_status_changed"})
    );
    ws.send(json!({"id": "1", "type": "stop"})).await;
    ws.send(json!({"type": "connection_terminate"})).await;
    assert_eq!(ws.close_code().await, 1000);
}

async fn bad_subscriptions_get_an_error_message(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.max_subscriptions_per_connection = 2;
    })
    .await;
    let s = scenario(&server, "bad").await;
    let mut ws = WsClient::ready(server.addr).await;

    ws.subscribe("1", ENGINE_EVENTS, json!({"run": uuid::Uuid::new_v4()}))
        .await;
    let error = ws.message().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "NOT_FOUND");

    let other = crate::common::create_run(&server, &s.template, "RUNNING").await;
    let stranger = register(&server, &other, "ActorEngine").await;
    ws.subscribe(
        "2",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": stranger}),
    )
    .await;
    let error = ws.message().await;
    assert_eq!(
        (error["id"].as_str(), error["type"].as_str()),
        (Some("2"), Some("error"))
    );
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(error["payload"][0]["extensions"]["field"], "engineId");

    ws.subscribe("3", "subscription { events(runId: 5) { id } }", json!({}))
        .await;
    let error = ws.message().await;
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Two live subscriptions are the limit here; a third is refused, the
    // connection stays.
    ws.subscribe("a", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.subscribe("b", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.subscribe("c", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    let error = ws.message().await;
    assert_eq!(
        (error["id"].as_str(), error["type"].as_str()),
        (Some("c"), Some("error"))
    );
    assert_eq!(error["payload"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.message().await["type"], "pong");
}

async fn a_busy_subscription_does_not_starve_another(backend: Backend) {
    let server = TestServer::start(backend).await;
    let busy = scenario(&server, "busy").await;
    let quiet = crate::common::create_run(&server, &busy.template, "RUNNING").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let engine = register(&server, &busy.run, "ActorEngine").await;
    let inputs: Vec<serde_json::Value> = (0..2000)
        .map(|i| json!({"runId": busy.run, "eventType": "tick", "payload": {"i": i}}))
        .collect();
    for chunk in inputs.chunks(500) {
        server
            .gql(
                "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                json!({ "i": chunk }),
            )
            .await;
    }

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "quiet",
        ENGINE_EVENTS,
        json!({"run": quiet, "types": ["tick"]}),
    )
    .await;
    ws.subscribe(
        "busy",
        ENGINE_EVENTS,
        json!({"run": busy.run, "engine": engine, "types": ["tick"]}),
    )
    .await;
    // Wait until the busy one streams, then give the quiet one an event.
    assert_eq!(ws.message().await["id"], "busy");
    publish(&server, json!({"runId": quiet, "eventType": "tick"})).await;
    let mut busy_before_quiet = 1;
    loop {
        match ws.receive().await {
            Received::Message(m) if m["id"] == "quiet" => break,
            Received::Message(m) if m["id"] == "busy" => busy_before_quiet += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        busy_before_quiet < 1000,
        "the quiet subscription waited behind {busy_before_quiet} of 2000 busy messages"
    );
}

async fn shutdown_closes_websockets_with_1001(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "bye").await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe("live", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.message().await["type"], "pong");
    server.stop().await;
    assert_eq!(ws.close_code().await, 1001);
}

async fn websocket_connections_are_limited(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.max_ws_connections = 2;
    })
    .await;
    let first = WsClient::ready(server.addr).await;
    let _second = WsClient::ready(server.addr).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/graphql", server.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
        }
        other => panic!("a third websocket was let in: {other:?}"),
    }
    // A place frees when a connection closes.
    first.drop_connection().await;
    let mut third = None;
    for _ in 0..50 {
        if let Ok((socket, _)) =
            tokio_tungstenite::connect_async(format!("ws://{}/graphql", server.addr)).await
        {
            third = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        third.is_some(),
        "the closed connection's place was given back"
    );
}
