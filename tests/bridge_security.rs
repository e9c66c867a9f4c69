//! Who gets in: tokens, loopback trust, Origin checks and the connection limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::*;
use workshop_bridge::Config;

fn strict(world: &World) -> Config {
    // Every test client is on loopback; without trust, it must prove itself like an iPad.
    Config {
        no_trust_loopback: true,
        ..world.config()
    }
}

#[tokio::test]
async fn without_trust_a_token_is_required_and_checked_before_the_upgrade() {
    let world = World::with_state("a: 1\n");
    let bridge = start(strict(&world)).await;

    let (status, body) = refusal(try_connect(&bridge, "/ws", &[]).await.unwrap_err());
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("token"));

    let (status, body) = refusal(
        try_connect(&bridge, "/ws?token=guess", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert_eq!(body["message"], "the token is wrong");

    for path in ["/", "/ws", "/ws/matrix"] {
        let mut ws = connect(&bridge, &format!("{path}?token={TOKEN}")).await;
        assert_eq!(recv(&mut ws).await["type"], "state", "{path}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let mut ws = try_connect(&bridge, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["type"], "state");
    bridge.shutdown().await;
}

#[tokio::test]
async fn loopback_clients_are_trusted_unless_told_otherwise() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut ws = connect(&bridge, "/ws").await;
    assert_eq!(recv(&mut ws).await["type"], "state");
    bridge.shutdown().await;
}

#[tokio::test]
async fn web_pages_from_other_origins_are_refused_even_on_this_machine() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        allowed_origins: vec!["https://workshop.example".into()],
        ..world.config()
    })
    .await;

    // A page on some web site, open in the Mac's own browser, tries to drive the bridge.
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        let error = try_connect(&bridge, "/ws", &[("origin", origin)])
            .await
            .unwrap_err();
        let (status, body) = refusal(error);
        assert_eq!(status, 403, "{origin}");
        assert_eq!(body["error"], "forbidden_origin");
    }
    // Even with the right token.
    let with_token = format!("/ws?token={TOKEN}");
    let (status, _) = refusal(
        try_connect(&bridge, &with_token, &[("origin", "https://evil.example")])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);

    let own = format!("http://{}", bridge.local_addr());
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "https://workshop.example",
        own.as_str(),
    ] {
        let mut ws = try_connect(&bridge, "/ws", &[("origin", origin)])
            .await
            .unwrap();
        assert_eq!(recv(&mut ws).await["type"], "state", "{origin}");
    }
    bridge.shutdown().await;
}

/// What follows `localhost` in an Origin is a port or nothing: an Origin that only starts
/// like a page on this machine is not one. (A browser never sends these, so this is the
/// check meaning what it says rather than a way in for web pages.)
#[tokio::test]
async fn an_origin_that_only_starts_like_localhost_is_refused() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    for origin in [
        "http://localhost:80@evil.example",
        "http://localhost:5173.evil.example",
        "https://127.0.0.1:x",
        "http://[::1]evil.example",
    ] {
        let Err(error) = try_connect(&bridge, "/ws", &[("origin", origin)]).await else {
            panic!("a page from {origin} was let in");
        };
        assert_eq!(refusal(error).0, 403, "{origin}");
    }
    bridge.shutdown().await;
}

#[tokio::test]
async fn no_auth_lets_everyone_in() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        token: None,
        no_auth: true,
        ..strict(&world)
    })
    .await;
    let mut ws = connect(&bridge, "/ws").await;
    assert_eq!(recv(&mut ws).await["type"], "state");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_bridge_without_a_token_does_not_start_unless_auth_is_off() {
    let world = World::new();
    let error = workshop_bridge::Bridge::start(Config {
        token: None,
        ..world.config()
    })
    .await
    .err()
    .expect("refused");
    assert!(error.to_string().contains("no token"), "{error}");
}

#[tokio::test]
async fn beyond_the_connection_limit_clients_get_503_and_others_are_unaffected() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        max_connections: 2,
        ..world.config()
    })
    .await;
    let (mut one, _) = connect_with_state(&bridge, "/ws").await;
    let (_two, _) = connect_with_state(&bridge, "/ws").await;
    let (status, body) = refusal(try_connect(&bridge, "/ws", &[]).await.unwrap_err());
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("too_many_connections"))
    );
    assert_nothing_pending(&mut one).await;

    drop(one);
    let mut three = wait_until_connects(&bridge).await;
    assert_eq!(recv(&mut three).await["type"], "state");
    bridge.shutdown().await;
}

/// A slot frees when the bridge notices the closed connection; retry until then.
async fn wait_until_connects(bridge: &workshop_bridge::BridgeHandle) -> Ws {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match try_connect(bridge, "/ws", &[]).await {
            Ok(ws) => return ws,
            Err(e) => {
                assert_eq!(refusal(e).0, 503);
                assert!(tokio::time::Instant::now() < deadline, "no slot freed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn the_status_api_needs_the_token_and_healthz_does_not() {
    let world = World::with_state("a: 1\n");
    let bridge = start(strict(&world)).await;
    let (status, body) = http_get(&bridge, "/healthz", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let (status, _) = http_get(&bridge, "/api/gateway/status", &[]).await;
    assert_eq!(status, 401);
    let (status, _) = http_get(
        &bridge,
        &format!("/api/gateway/status?token={TOKEN}"),
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) =
        http_get(&bridge, &format!("/api/gateway/status?token={TOKEN}"), &[]).await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["state"]["seq"], 1);
    bridge.shutdown().await;
}

#[tokio::test]
async fn the_built_in_page_is_served_to_browsers_with_security_headers() {
    let world = World::with_state("a: 1\n");
    let bridge = start(strict(&world)).await;
    // Pages need no token: they are the same for everyone and hold no data.
    for path in ["/", "/client.js"] {
        let (status, head, body) = http_get_with_head(bridge.local_addr(), path, &[]).await;
        assert_eq!(status, 200, "{path}");
        if path == "/" {
            assert!(body.contains("<html"), "{body}");
        }
        // The page may run only its own scripts and talk only to its own bridge.
        let csp = header_in(&head, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("connect-src 'self' ws: wss:"),
            "{path}: {head}"
        );
        assert_eq!(
            header_in(&head, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            header_in(&head, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header_in(&head, "x-frame-options"), Some("deny"), "{path}");
    }
    // No path reaches outside the built-in page's few files (a folder given with
    // `--workshop-dir` is tried the same way in `assets.rs`).
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/nope.txt",
    ] {
        assert_eq!(http_get(&bridge, path, &[]).await.0, 404, "{path}");
    }
    bridge.shutdown().await;
}
