//! OAuth: codes from consent, token exchange and refresh, and the profile behind `auth_user`.

use alipay::CallOptions;
use serde_json::{Value, json};

use crate::support::*;

async fn authorize(sandbox: &TestSandbox, app: &TestApp, buyer: &str, scope: &str) -> String {
    let v = sandbox
        .post(
            "/control/oauth/authorize",
            json!({
                "app_id": app.app_id, "buyer_id": buyer, "scope": scope,
                "redirect_uri": "https://vend.example/cb", "state": "s1",
            }),
        )
        .await;
    let redirect = v["redirect_url"].as_str().expect("redirect_url");
    assert!(redirect.starts_with("https://vend.example/cb?app_id="));
    assert!(redirect.contains("&state=s1"));
    v["auth_code"].as_str().expect("auth_code").to_owned()
}

fn by_code(code: &str) -> OauthToken {
    OauthToken {
        grant_type: "authorization_code",
        code: Some(code.to_owned()),
        refresh_token: None,
    }
}

async fn error_sub_code(app: &TestApp, token: &OauthToken) -> String {
    app.fails(token).await
}

#[tokio::test]
async fn a_code_is_exchanged_once_for_tokens_naming_the_user() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000401").await;
    let buyer = sandbox.buyer("1.00").await;
    let code = authorize(&sandbox, &app, &buyer, "auth_base").await;

    let t = app.ok(&by_code(&code)).await;

    assert_eq!(t["user_id"], buyer.as_str());
    assert!(
        t["access_token"]
            .as_str()
            .is_some_and(|s| s.starts_with("authusr"))
    );
    assert!(t["refresh_token"].is_string());
    assert_eq!(t["expires_in"], 1_296_000);
    assert_eq!(t["re_expires_in"], 2_592_000);
    assert_eq!(
        error_sub_code(&app, &by_code(&code)).await,
        "isv.code-invalid"
    );
    assert_eq!(
        error_sub_code(&app, &by_code("nonsense")).await,
        "isv.code-invalid"
    );
}

#[tokio::test]
async fn a_code_expires_after_five_minutes_and_belongs_to_its_app() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000402").await;
    let other = sandbox.app("2021000000000403").await;
    let buyer = sandbox.buyer("1.00").await;

    let code = authorize(&sandbox, &app, &buyer, "auth_base").await;
    assert_eq!(
        error_sub_code(&other, &by_code(&code)).await,
        "isv.code-invalid"
    );
    sandbox.advance(5 * 60 + 1).await;
    assert_eq!(
        error_sub_code(&app, &by_code(&code)).await,
        "isv.code-invalid"
    );
}

#[tokio::test]
async fn an_open_id_app_gets_only_the_open_id() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with("2021000000000404", json!({ "id_mode": "open_id" }))
        .await;
    let buyer = sandbox.buyer("1.00").await;
    let code = authorize(&sandbox, &app, &buyer, "auth_user").await;

    let t = app.ok(&by_code(&code)).await;

    assert!(t.get("user_id").is_none());
    assert!(
        t["open_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != buyer)
    );
    let info = app
        .client
        .execute(
            &UserInfoShare,
            &CallOptions::with_user_token(t["access_token"].as_str().unwrap()),
        )
        .await
        .success()
        .unwrap();
    assert_eq!(info["open_id"], t["open_id"]);
    assert!(info.get("user_id").is_none());
}

#[tokio::test]
async fn only_auth_user_tokens_read_the_profile() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000405").await;
    let buyer = sandbox.buyer("1.00").await;
    let share = |token: &str| {
        let app = &app;
        let token = token.to_owned();
        async move {
            app.client
                .execute(&UserInfoShare, &CallOptions::with_user_token(token))
                .await
        }
    };

    let user = app
        .ok(&by_code(
            &authorize(&sandbox, &app, &buyer, "auth_user").await,
        ))
        .await;
    let info: Value = share(user["access_token"].as_str().unwrap())
        .await
        .success()
        .unwrap();
    assert_eq!(info["user_id"], buyer.as_str());
    assert!(info["nick_name"].as_str().is_some_and(|n| !n.is_empty()));

    let base = app
        .ok(&by_code(
            &authorize(&sandbox, &app, &buyer, "auth_base").await,
        ))
        .await;
    let refused = share(base["access_token"].as_str().unwrap()).await;
    match refused {
        alipay::Outcome::Failure(alipay::Failure::Alipay(e)) => {
            assert_eq!(e.code, "20001");
            assert_eq!(e.sub_code(), "aop.invalid-auth-token");
        }
        other => panic!("expected 20001, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refresh_token_replaces_both_tokens() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000406").await;
    let buyer = sandbox.buyer("1.00").await;
    let first = app
        .ok(&by_code(
            &authorize(&sandbox, &app, &buyer, "auth_user").await,
        ))
        .await;
    let refresh = |t: &Value| OauthToken {
        grant_type: "refresh_token",
        code: None,
        refresh_token: t["refresh_token"].as_str().map(str::to_owned),
    };

    let second = app.ok(&refresh(&first)).await;

    assert_eq!(second["user_id"], buyer.as_str());
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(
        app.fails(&refresh(&first)).await,
        "isv.refresh-token-invalid",
        "the old refresh token is spent"
    );
    let bad_grant = OauthToken {
        grant_type: "password",
        code: None,
        refresh_token: None,
    };
    assert_eq!(app.fails(&bad_grant).await, "isv.grant-type-invalid");
}

#[tokio::test]
async fn authorize_refuses_unknown_scopes_and_foreign_redirects() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with(
            "2021000000000407",
            json!({ "redirect_uris": ["https://vend.example/cb"] }),
        )
        .await;
    let buyer = sandbox.buyer("1.00").await;
    let (status, _) = sandbox
        .post_status(
            "/control/oauth/authorize",
            json!({ "app_id": app.app_id, "buyer_id": buyer, "scope": "auth_all",
                    "redirect_uri": "https://vend.example/cb" }),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = sandbox
        .post_status(
            "/control/oauth/authorize",
            json!({ "app_id": app.app_id, "buyer_id": buyer, "scope": "auth_base",
                    "redirect_uri": "https://evil.example/cb" }),
        )
        .await;
    assert_eq!(status, 422);
}
