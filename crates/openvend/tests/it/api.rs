//! The operator API over real HTTP: token required, slots edited with checks, orders with
//! their timeline, manual refunds once per idempotency key.

use serde_json::{Value, json};

use openvend::app::App;
use openvend::config::Settings;

struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        sandbox_listen: "127.0.0.1:0".into(),
        mqtt: openvend::config::MqttSettings {
            embedded_listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        api_token: Some("test-token-0123456789".into()),
        ..Settings::default()
    };
    let settings = Settings {
        database_url: crate::store::postgres_url_if_asked().await.map(Into::into),
        ..settings
    };
    let app = App::build(settings).await.unwrap();
    let api = Api {
        url: app.public_url.clone(),
        token: "test-token-0123456789".into(),
        http: reqwest::Client::new(),
        stop: app.shutdown_token(),
        _dir: dir,
    };
    tokio::spawn(app.run_until_stopped());
    api
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let api = start().await;
    for path in [
        "/api/v1/machines",
        "/api/v1/orders",
        "/api/v1/products",
        "/api/v1/machines/VM-0001/slots",
        "/api/v1/attention",
    ] {
        let resp = api
            .http
            .get(format!("{}{path}", api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let wrong = api
            .http
            .get(format!("{}{path}", api.url))
            .bearer_auth("test-token-124")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let doc = api
        .http
        .get(format!("{}/api/v1/openapi.json", api.url))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn slots_are_listed_and_edited_within_their_rules() {
    let api = start().await;
    let (status, machines) = api
        .call(reqwest::Method::GET, "/api/v1/machines", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(machines["machines"].as_array().unwrap().len(), 3);

    let (status, slots) = api
        .call(
            reqwest::Method::PATCH,
            "/api/v1/machines/VM-0001/slots/A1",
            Some(json!({ "price_fen": 400, "stock": 10 })),
        )
        .await;
    assert_eq!(status, 200, "{slots}");
    let a1 = slots["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "A1")
        .unwrap()
        .clone();
    assert_eq!(
        (a1["price_fen"].as_i64(), a1["stock"].as_i64()),
        (Some(400), Some(10))
    );

    for (body, want) in [
        (json!({ "stock": 11 }), 422),
        (json!({ "price_fen": -1 }), 422),
        // Nothing can be paid for 0.00: the slot would fail every sale.
        (json!({ "price_fen": 0 }), 422),
        (json!({ "price_fen": 100_000_001 }), 422),
        (json!({ "capacity": 1001 }), 422),
        (json!({ "reserved": 0 }), 422),
        (json!({ "product_id": 999 }), 422),
        (json!({ "stock": "ten" }), 422),
    ] {
        let (status, err) = api
            .call(
                reqwest::Method::PATCH,
                "/api/v1/machines/VM-0001/slots/A1",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, want, "{body} → {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body} has a reason"
        );
    }
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            "/api/v1/machines/VM-0001/slots/Z9",
            Some(json!({ "stock": 1 })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/v1/machines/NOPE/slots", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn orders_can_be_filtered_and_unknown_ones_are_404() {
    let api = start().await;
    let (status, list) = api
        .call(reqwest::Method::GET, "/api/v1/orders?state=paid", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["orders"], json!([]));
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/v1/orders?state=PAID", None)
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/v1/orders/424242", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/orders/424242/refunds",
            Some(json!({ "amount_fen": 1, "reason": "x", "idempotency_key": "k" })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/orders/1/refunds",
            Some(json!({ "amount_fen": 1, "reason": "x" })),
        )
        .await;
    assert_eq!(status, 422, "idempotency_key is required");
    // A NUL in the reason (refused in text by PostgreSQL, sent on to Alipay by SQLite) is
    // refused with the reason; a key of 64 characters that are not ASCII is a key.
    let (status, err) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/orders/1/refunds",
            Some(json!({ "amount_fen": 1, "reason": "x\u{0}y", "idempotency_key": "k" })),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("reason"), "{err}");
    let (status, err) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/orders/424242/refunds",
            Some(json!({ "amount_fen": 1, "reason": "x", "idempotency_key": "退".repeat(64) })),
        )
        .await;
    assert_eq!(status, 404, "checked, then the order looked for: {err}");
    // Out of range, or not a number at all: refused with the reason, in the API's error shape.
    for (path, want) in [
        ("/api/v1/orders?limit=0", 422),
        ("/api/v1/orders?limit=501", 422),
        ("/api/v1/orders?limit=abc", 400),
        ("/api/v1/orders?page=2", 400),
        ("/api/v1/orders/abc", 400),
    ] {
        let (status, err) = api.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, want, "{path} → {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path} has a reason: {err}"
        );
    }
    let (status, list) = api
        .call(reqwest::Method::GET, "/api/v1/orders?limit=500", None)
        .await;
    assert_eq!(status, 200, "{list}");
}

#[tokio::test]
async fn machines_are_added_with_their_slots_and_bad_ones_are_refused_with_the_reason() {
    use reqwest::Method;
    let api = start().await;
    let good = json!({ "code": "NEW-01", "kind": "vending", "terminal_id": "NEW01", "site": "Hall",
        "slots": [{ "code": "B1", "product_id": 1, "price_fen": 300, "capacity": 10, "stock": 5 }] });
    let (status, created) = api
        .call(Method::POST, "/api/v1/machines", Some(good.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 32);
    assert!(
        created["device"]["mqtt_url"]
            .as_str()
            .unwrap()
            .starts_with("mqtt://")
    );
    let (_, creds) = api
        .call(Method::GET, "/api/v1/machines/NEW-01/credentials", None)
        .await;
    assert_eq!(creds["secret"], secret.as_str());
    assert!(
        creds["h5_url"].as_str().unwrap().ends_with("/m/NEW-01"),
        "the page its printed QR code opens: {creds}"
    );
    let (_, slots) = api
        .call(Method::GET, "/api/v1/machines/NEW-01/slots", None)
        .await;
    assert_eq!(slots["slots"][0]["code"], "B1", "{slots}");

    let (status, _) = api.call(Method::POST, "/api/v1/machines", Some(good)).await;
    assert_eq!(status, 409, "a second machine with the same code");
    let bad_cases = [
        (
            json!({ "code": "a/b", "kind": "vending", "terminal_id": "T1" }),
            422,
            "code",
        ),
        (
            json!({ "code": "X1", "kind": "toaster", "terminal_id": "T1" }),
            422,
            "kind",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T 1" }),
            422,
            "terminal_id",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T1",
            "slots": [{ "code": "B1", "product_id": 1, "price_fen": 0, "capacity": 10, "stock": 5 }] }),
            422,
            "price_fen",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T1",
            "slots": [{ "code": "B1", "product_id": 1, "price_fen": 10, "capacity": 10, "stock": 11 }] }),
            422,
            "stock",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T1",
            "slots": [{ "code": "B1", "product_id": 999, "price_fen": 10, "capacity": 10, "stock": 1 }] }),
            422,
            "product",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T1", "price": 1 }),
            422,
            "price",
        ),
        (
            json!({ "code": "X1", "kind": "vending", "terminal_id": "T1", "site": "Hall\u{0}B" }),
            422,
            "site",
        ),
    ];
    for (body, want, word) in bad_cases {
        let (status, answer) = api
            .call(Method::POST, "/api/v1/machines", Some(body.clone()))
            .await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(word),
            "{body} -> {answer}"
        );
    }
    // Nothing of the refused machines was written.
    let (_, machines) = api.call(Method::GET, "/api/v1/machines", None).await;
    assert!(!machines.to_string().contains("X1"), "{machines}");
    let (status, _) = api
        .call(Method::GET, "/api/v1/machines/NOPE/credentials", None)
        .await;
    assert_eq!(status, 404);
    let (status, cleared) = api
        .call(Method::POST, "/api/v1/machines/NEW-01/clear-fault", None)
        .await;
    assert_eq!((status, cleared["fault"].clone()), (200, Value::Null));
    // Paths no machine or slot can have: a NUL (which PostgreSQL refuses in text), a byte
    // that is not UTF-8. Each answered in the API's JSON, none a 500.
    for (method, path, want) in [
        (Method::GET, "/api/v1/machines/%00/slots", 404),
        (Method::GET, "/api/v1/machines/%00/credentials", 404),
        (Method::POST, "/api/v1/machines/%00/clear-fault", 404),
        (Method::POST, "/api/v1/machines/%00/secret", 404),
        (Method::PATCH, "/api/v1/machines/%00", 404),
        (Method::GET, "/api/v1/machines/%FF/slots", 400),
    ] {
        let (status, answer) = api.call(method, path, None).await;
        assert_eq!(status, want, "{path} -> {answer}");
        assert!(answer["error"].is_string(), "{path} -> {answer}");
    }
    let (status, answer) = api
        .call(
            Method::PATCH,
            "/api/v1/machines/NEW-01/slots/B%001",
            Some(json!({ "stock": 1 })),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "slot not found");
}

#[tokio::test]
async fn products_are_added_renamed_and_sold_in_a_new_machine() {
    use reqwest::Method;
    let api = start().await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({ "name": "  Oolong tea 500ml " })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Oolong tea 500ml", "trimmed");
    let id = created["id"].as_i64().unwrap();
    let (status, renamed) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/products/{id}"),
            Some(json!({ "name": "乌龙茶 500ml" })),
        )
        .await;
    assert_eq!((status, &renamed["name"]), (200, &json!("乌龙茶 500ml")));
    let (_, list) = api.call(Method::GET, "/api/v1/products", None).await;
    assert!(
        list["products"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id && p["name"] == "乌龙茶 500ml"),
        "{list}"
    );
    // A new machine's slot sells it.
    let (status, machine) = api
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({ "code": "VM-0900", "kind": "vending", "terminal_id": "T0900",
                "slots": [{ "code": "A1", "product_id": id, "price_fen": 450, "capacity": 10, "stock": 5 }] })),
        )
        .await;
    assert_eq!(status, 201, "{machine}");
    let (_, slots) = api
        .call(Method::GET, "/api/v1/machines/VM-0900/slots", None)
        .await;
    assert_eq!(slots["slots"][0]["product"], "乌龙茶 500ml", "{slots}");

    // Bad input: each refused with its reason, nothing written.
    for (method, path, body, want) in [
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!({ "name": " " }),
            422,
        ),
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!({ "name": "x".repeat(101) }),
            422,
        ),
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!({ "name": "a\u{0}b" }),
            422,
        ),
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!({ "name": "A", "price": 1 }),
            422,
        ),
        (
            Method::PATCH,
            "/api/v1/products/999999".to_owned(),
            json!({ "name": "A" }),
            404,
        ),
    ] {
        let (status, body) = api.call(method, &path, Some(body)).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (_, after) = api.call(Method::GET, "/api/v1/products", None).await;
    assert_eq!(
        after["products"].as_array().unwrap().len(),
        list["products"].as_array().unwrap().len()
    );
}
