//! An offline Alipay gateway that speaks Alipay's wire protocol exactly.
//!
//! It holds its own RSA key pair (the "Alipay" key), registered apps, buyers with balances,
//! trades, refunds, settlements, pre-authorisations, agreements, OAuth grants and face tokens;
//! it sends signed notifications on Alipay's retry schedule, serves buyer pages (QR cashier,
//! OAuth consent, a `tradePay` bridge), generates daily bills, and injects faults on request.
//! It shares only protocol primitives (keys, string-to-sign, amounts) with the `alipay` client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sandbox = alipay_sandbox::Sandbox::build(Default::default(), "127.0.0.1:0").await?;
//! println!("gateway at {}", sandbox.gateway_url());
//! sandbox.run_until_stopped().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod bill;
pub mod ca;
pub mod cert_routes;
pub mod clock;
pub mod config;
pub mod control;
pub mod error;
pub mod fault;
pub mod gateway;
pub mod ids;
pub mod model;
pub mod notify;
pub mod pages;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use alipay::sign::Charset;
use alipay::{AppPrivateKey, PublicKey};
use axum::Router;
use axum::response::Response;
use axum::routing::{any, get};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ca::Ca;
use crate::clock::Clock;
use crate::config::SandboxConfig;
use crate::error::ApiResult;
use crate::fault::Faults;
use crate::model::{App, KeyMode};
use crate::store::Store;

pub use crate::config::AppConfig;

/// Shared state of a running sandbox.
#[derive(Debug)]
pub struct Ctx {
    /// Settings.
    pub config: SandboxConfig,
    /// The records.
    store: Mutex<Store>,
    /// The sandbox's own ("Alipay") private key.
    pub key: AppPrivateKey,
    /// Its public half, which apps use to verify answers and notifications.
    pub public_key: PublicKey,
    /// The sandbox clock.
    pub clock: Clock,
    /// Fault rules.
    pub faults: Faults,
    /// The URL the sandbox is reached at, without a trailing slash.
    pub base_url: String,
    app_keys: RwLock<HashMap<String, PublicKey>>,
    notifier: tokio::sync::Notify,
    /// HTTP client for notifications.
    pub http: reqwest::Client,
    /// The certificate authority of certificate mode.
    pub ca: Ca,
    /// Issued bill URLs and injected bill differences.
    pub bills: bill::BillDesk,
}

impl Ctx {
    /// Locks the store. Never hold the guard across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A registered app.
    pub fn app(&self, app_id: &str) -> Option<App> {
        self.store().data.apps.get(app_id).cloned()
    }

    /// The parsed public key of an app (cached).
    pub fn app_key(&self, app: &App) -> Option<PublicKey> {
        if let Ok(keys) = self.app_keys.read()
            && let Some(k) = keys.get(&app.app_id)
        {
            return Some(k.clone());
        }
        let key = gateway::parse_app_key(&app.public_key)?;
        if let Ok(mut keys) = self.app_keys.write() {
            keys.insert(app.app_id.clone(), key.clone());
        }
        Some(key)
    }

    /// Registers (or replaces) an app.
    pub fn register_app(&self, app: App) -> anyhow::Result<()> {
        if gateway::parse_app_key(&app.public_key).is_none() {
            anyhow::bail!(
                "app {}: the public key is not an RSA public key of at least 2048 bits",
                app.app_id
            );
        }
        if let Ok(mut keys) = self.app_keys.write() {
            keys.remove(&app.app_id);
        }
        let mut store = self.store();
        store.put_app(app);
        store.flush();
        Ok(())
    }

    /// True when `sn` is the root SN of the sandbox's certificate chain.
    pub fn root_cert_sn_matches(&self, sn: &str) -> bool {
        self.ca.root_cert_sn() == sn
    }

    /// Wakes the notification sender.
    pub fn wake_notifier(&self) {
        self.notifier.notify_one();
    }

    /// Signs and formats an answer to `app` for `method` (or `error_response` for `"error"`).
    /// Apps in certificate mode also get `alipay_cert_sn`, the SN of the signing certificate.
    pub fn answer(&self, app: &App, method: &str, result: ApiResult, charset: Charset) -> Response {
        let mut object = serde_json::Map::new();
        match result {
            Ok(fields) => {
                object.insert("code".into(), "10000".into());
                object.insert("msg".into(), "Success".into());
                object.extend(fields);
            }
            Err(e) => object = e.to_object(),
        }
        let key = if method == "error" {
            "error_response".to_owned()
        } else {
            gateway::response_key(method)
        };
        let text = gateway::alipay_json(&Value::Object(object));
        let signed = charset
            .encode(&text)
            .map(|b| self.key.sign(&b))
            .unwrap_or_default();
        let cert_sn = if Self::is_cert_mode(app) {
            self.ca.current_alipay_cert().map(|c| c.sn)
        } else {
            None
        };
        let body = match cert_sn {
            Some(sn) => {
                format!("{{\"{key}\":{text},\"alipay_cert_sn\":\"{sn}\",\"sign\":\"{signed}\"}}")
            }
            None => format!("{{\"{key}\":{text},\"sign\":\"{signed}\"}}"),
        };
        gateway::raw_answer(body, charset)
    }

    /// True for apps in certificate mode.
    pub fn is_cert_mode(app: &App) -> bool {
        matches!(app.key_mode, KeyMode::Certificate { .. })
    }
}

/// A built sandbox: bound, not yet serving.
#[derive(Debug)]
pub struct Sandbox {
    ctx: Arc<Ctx>,
    listener: TcpListener,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Sandbox {
    /// Loads or creates state and keys, registers the configured apps, and binds `listen`.
    pub async fn build(config: SandboxConfig, listen: &str) -> anyhow::Result<Sandbox> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let (store, key) = match &config.data_dir {
            Some(dir) => (Store::open(dir)?, load_or_create_key(dir)?),
            None => (Store::in_memory(), AppPrivateKey::generate()?),
        };
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let clock = Clock::with_offset(store.data.clock_offset_ms);
        let public_key = key.public_key();
        let ca = Ca::load_or_create(config.data_dir.as_deref(), &public_key)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()?;
        let ctx = Arc::new(Ctx {
            config: config.clone(),
            store: Mutex::new(store),
            key,
            public_key,
            clock,
            faults: Faults::with_seed(config.seed),
            base_url,
            app_keys: RwLock::new(HashMap::new()),
            notifier: tokio::sync::Notify::new(),
            http,
            ca,
            bills: bill::BillDesk::default(),
        });
        for app in &config.apps {
            let mode = if config.cert_apps.contains(&app.app_id) {
                config::AppKeyMode::Cert
            } else {
                config::AppKeyMode::PublicKey
            };
            control::register_app_as(&ctx, app.clone(), mode)?;
        }
        control::ensure_demo_buyers(&ctx, config.demo_buyers);
        Ok(Sandbox {
            ctx,
            listener,
            addr,
            shutdown: CancellationToken::new(),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway URL (`…/gateway.do`).
    pub fn gateway_url(&self) -> String {
        format!("{}/gateway.do", self.ctx.base_url)
    }

    /// The shared state (for embedding and tests).
    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// A token that stops the sandbox when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The HTTP routes, for embedding in another server.
    pub fn router(ctx: Arc<Ctx>) -> Router {
        Router::new()
            .route("/gateway.do", any(gateway::handle))
            .route("/health", get(|| async { "ok" }))
            .merge(control::router())
            .merge(cert_routes::router())
            .merge(bill::router())
            .merge(pages::router())
            .with_state(ctx)
    }

    /// Serves until the shutdown token is cancelled.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let notifier = tokio::spawn(notify::run(self.ctx.clone(), self.shutdown.clone()));
        let app = Self::router(self.ctx.clone());
        let token = self.shutdown.clone();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await?;
        self.shutdown.cancel();
        let _ = notifier.await;
        Ok(())
    }
}

fn load_or_create_key(dir: &Path) -> anyhow::Result<AppPrivateKey> {
    let private_path = dir.join("alipay_private_key.pem");
    let public_path = dir.join("alipay_public_key.txt");
    if private_path.exists() {
        let text = std::fs::read_to_string(&private_path)?;
        let key = AppPrivateKey::from_text(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", private_path.display()))?;
        if !public_path.exists() {
            std::fs::write(&public_path, key.public_key().to_spki_base64())?;
        }
        return Ok(key);
    }
    let key = AppPrivateKey::generate()?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(&private_path, key.to_pkcs8_pem()?)?;
    std::fs::write(&public_path, key.public_key().to_spki_base64())?;
    std::fs::write(
        dir.join("alipay_public_key.pem"),
        key.public_key().to_spki_pem(),
    )?;
    Ok(key)
}
