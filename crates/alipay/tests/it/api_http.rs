//! Over real HTTP, against a tiny canned server on 127.0.0.1:0 (a raw `TcpListener`, to keep
//! dependencies lean): timeouts, refused connections, HTTP errors, retries of read-only calls
//! only, and the shape and signature of what the client sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alipay::api::trade::{Query, Refund};
use alipay::retry::RetryPolicy;
use alipay::sign::{SignScope, string_to_sign};
use alipay::{CallOptions, Config, Outcome, SignType, Unknown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api_support::{APP_ID, app_key, client_with, signed_answer};

/// One canned answer: status, body, and how long to wait before answering.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Canned {
    pub fn ok(body: Vec<u8>) -> Self {
        Canned {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Self {
        Canned {
            status,
            body: b"<html>Bad Gateway</html>".to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// What the server received: the request target (path and query) and the body.
#[derive(Debug, Clone)]
pub struct Received {
    pub target: String,
    pub body: Vec<u8>,
}

/// A server answering the n-th request with the n-th canned answer (the last one repeats).
pub struct CannedServer {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl CannedServer {
    pub async fn start(answers: Vec<Canned>) -> Self {
        Self::start_with(|_| answers).await
    }

    /// Like [`CannedServer::start`], with answers that may name the server (`http://addr`).
    pub async fn start_with(answers: impl FnOnce(&str) -> Vec<Canned>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answers = answers(&format!("http://{addr}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    let n = {
                        let mut log = log.lock().expect("log");
                        log.push(request);
                        log.len()
                    };
                    let Some(answer) = answers.get(n - 1).or(answers.last()).cloned() else {
                        return;
                    };
                    tokio::time::sleep(answer.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&answer.body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        CannedServer {
            url: format!("http://{addr}/gateway.do"),
            received,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let target = head.split(' ').nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        target,
        body: buf[header_end..].to_vec(),
    })
}

pub fn config(url: &str) -> Config {
    let mut c = Config::new(APP_ID);
    c.gateway_url = url.to_owned();
    c.timeout = Duration::from_millis(500);
    c.connect_timeout = Duration::from_millis(500);
    c.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    c
}

const QUERY_OK: &str = r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"order-42","trade_status":"TRADE_SUCCESS","total_amount":"3.50","buyer_user_id":"2088102146225135"}"#;

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    alipay::form::decode(bytes)
        .expect("form")
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).expect("utf-8 name"),
                String::from_utf8(v).expect("utf-8 value"),
            )
        })
        .collect()
}

#[tokio::test]
async fn no_answer_in_time_is_unknown_timeout() {
    let server = CannedServer::start(vec![Canned {
        delay: Duration::from_secs(3),
        ..Canned::ok(signed_answer("alipay.trade.refund", "{}"))
    }])
    .await;
    let client = client_with(config(&server.url));
    let out = client
        .execute(
            &Refund::new("order-42", "1.00".parse().expect("amount"), "r1"),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(out, Outcome::Unknown(Unknown::Timeout));
}

#[tokio::test]
async fn a_refused_connection_is_unknown_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = client_with(config(&format!("http://{addr}/gateway.do")));
    let out = client
        .execute(
            &Refund::new("order-42", "1.00".parse().expect("amount"), "r1"),
            &CallOptions::default(),
        )
        .await;
    assert!(
        matches!(out, Outcome::Unknown(Unknown::Connection(_))),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_transport_error_never_shows_the_users_auth_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = client_with(config(&format!("http://{addr}/gateway.do")));
    let out = client
        .execute(
            &alipay::api::oauth::UserInfoShare,
            &CallOptions::with_user_token("authusrBsecret0123456789"),
        )
        .await;
    let Outcome::Unknown(u) = out else {
        panic!("{out:?}")
    };
    assert!(!format!("{u} {u:?}").contains("authusrBsecret"), "{u}");
}

#[tokio::test]
async fn a_502_on_refund_is_unknown_and_not_retried() {
    let server = CannedServer::start(vec![Canned::status(502)]).await;
    let client = client_with(config(&server.url));
    let out = client
        .execute(
            &Refund::new("order-42", "1.00".parse().expect("amount"), "r1"),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(out, Outcome::Unknown(Unknown::HttpStatus(502)));
    assert_eq!(
        server.requests().len(),
        1,
        "a refund must never be re-sent automatically"
    );
}

#[tokio::test]
async fn a_query_is_retried_after_a_502_and_then_succeeds() {
    let server = CannedServer::start(vec![
        Canned::status(502),
        Canned::ok(signed_answer("alipay.trade.query", QUERY_OK)),
    ])
    .await;
    let client = client_with(config(&server.url));
    let out = client
        .execute(&Query::by_out_trade_no("order-42"), &CallOptions::default())
        .await;
    let r = out.success().expect("success after one retry");
    assert_eq!(r.out_trade_no, "order-42");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn common_params_go_in_the_query_biz_content_in_the_body_and_the_sign_verifies() {
    let server = CannedServer::start(vec![Canned::ok(signed_answer(
        "alipay.trade.query",
        QUERY_OK,
    ))])
    .await;
    let client = client_with(config(&server.url));
    let out = client
        .execute(&Query::by_out_trade_no("order-42"), &CallOptions::default())
        .await;
    assert!(out.is_success(), "{out:?}");
    let requests = server.requests();
    let request = requests.first().expect("one request");
    let (path, query) = request.target.split_once('?').expect("a query string");
    assert_eq!(path, "/gateway.do");
    let query = pairs(query.as_bytes());
    let body = pairs(&request.body);
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    for common in [
        "app_id",
        "method",
        "format",
        "charset",
        "sign_type",
        "timestamp",
        "version",
        "sign",
    ] {
        assert!(
            names.contains(&common),
            "{common} missing from the URL query: {names:?}"
        );
    }
    assert_eq!(
        body,
        vec![(
            "biz_content".to_owned(),
            r#"{"out_trade_no":"order-42"}"#.to_owned()
        )]
    );
    let sign = query
        .iter()
        .find(|(k, _)| k == "sign")
        .map(|(_, v)| v.clone())
        .expect("sign");
    let to_sign = string_to_sign(
        query
            .iter()
            .chain(body.iter())
            .map(|(k, v)| (k.as_str(), v.as_str())),
        SignScope::Request,
    );
    assert!(to_sign.contains("sign_type=RSA2"));
    assert!(
        app_key()
            .public_key()
            .verify(SignType::Rsa2, to_sign.as_bytes(), &sign)
    );
}
