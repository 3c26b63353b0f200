//! A merchant notify endpoint for tests: a real axum server on 127.0.0.1:0 that records every
//! body it receives and answers from a script (then with a default answer).

#![allow(clippy::unwrap_used)] // tests may unwrap, helpers included
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use crate::support::TestSandbox;

#[derive(Default)]
struct Script {
    answers: VecDeque<&'static str>,
    default: &'static str,
    bodies: Vec<String>,
}

pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<Script>>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Receiver {
    /// Answers `answers` in order, then `default` forever.
    pub async fn start(answers: &[&'static str], default: &'static str) -> Receiver {
        let state = Arc::new(Mutex::new(Script {
            answers: answers.iter().copied().collect(),
            default,
            bodies: Vec::new(),
        }));
        let app = Router::new()
            .route("/notify", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        });
        Receiver {
            url,
            state,
            shutdown,
        }
    }

    /// Always answers `success`.
    pub async fn ok() -> Receiver {
        Receiver::start(&[], "success").await
    }

    /// Bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().bodies.clone()
    }
}

async fn receive(State(state): State<Arc<Mutex<Script>>>, body: String) -> &'static str {
    let mut s = state.lock().unwrap();
    s.bodies.push(body);
    let default = s.default;
    s.answers.pop_front().unwrap_or(default)
}

/// A URL nobody listens on: a port that was bound and released.
pub async fn down_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Polls `check` until it returns Some, failing the test after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The notifications of an app, as the control API lists them.
pub async fn notifications(sandbox: &TestSandbox, app_id: &str) -> Vec<Value> {
    sandbox
        .get(&format!("/control/notifications?app_id={app_id}"))
        .await["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the app's only notification satisfies `pred`, and returns it.
pub async fn wait_notification(
    sandbox: &TestSandbox,
    app_id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, || async {
        let list = notifications(sandbox, app_id).await;
        list.first().filter(|n| pred(n)).cloned()
    })
    .await
}

/// Waits until the receiver holds at least `n` bodies.
pub async fn wait_bodies(receiver: &Receiver, n: usize) -> Vec<String> {
    eventually(&format!("{n} notification bodies"), || async {
        let b = receiver.bodies();
        (b.len() >= n).then_some(b)
    })
    .await
}
