//! Start-up: builds every part from the settings, binds the listeners, and runs until stopped.
//!
//! `App::build` does all the work that can fail (database, migrations, keys, the embedded
//! sandbox, the demo fleet) before anything serves, so a bad setting stops start-up with a
//! message. Tests build the same `App` with port 0.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use alipay::{AppPrivateKey, Client, Config, Verification};
use alipay_sandbox::Sandbox;
use alipay_sandbox::config::SandboxConfig;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::demo;
use crate::device::mqtt::LinkSettings;
use crate::device::{DeviceChannel, DeviceEvent};
use crate::services::Services;
use crate::store::{Backend, Db};

/// The app id OpenVend registers with its embedded sandbox.
pub const SANDBOX_APP_ID: &str = "9021000000000001";

/// A built OpenVend: listeners bound, database migrated, Alipay client ready.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    /// The store.
    pub db: Db,
    /// The Alipay client (real Alipay or the embedded sandbox).
    pub alipay: Client,
    /// What handlers and jobs share.
    pub services: Arc<Services>,
    /// What the buyer's H5 pages share.
    pub h5: Arc<crate::h5::H5>,
    sandbox: Option<Sandbox>,
    sandbox_url: Option<String>,
    /// The public base URL.
    pub public_url: String,
    /// Where the server's MQTT link connects (the embedded broker or the configured one).
    pub mqtt: LinkSettings,
    /// Whether the broker is the embedded one.
    pub mqtt_embedded: bool,
    /// The server's in-memory session in the embedded broker, opened with the broker.
    embedded_session: Option<crate::device::broker::LocalSession>,
    events: tokio::sync::mpsc::Receiver<DeviceEvent>,
    job_workers: usize,
    shutdown: CancellationToken,
}

impl App {
    /// Builds everything the settings describe.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| anyhow::anyhow!("data_dir {}: {e}", settings.data_dir.display()))?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen {}: {e}", settings.listen))?;
        let addr = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned();

        let db = Db::connect(&settings.database_url(), settings.database_url.is_none())
            .await
            .map_err(|e| anyhow::anyhow!("database_url: {e}"))?;
        db.migrate().await?;
        if db.backend == Backend::Sqlite {
            // SQLite is one instance's store: a lease left by a killed process is not another
            // live worker's, so its jobs are resumed at once instead of after the lease.
            crate::store::query("UPDATE jobs SET locked_until = NULL")
                .execute(&db.pool)
                .await?;
        }

        let (alipay, alipay_key, sandbox, seller_pid) = match &settings.alipay {
            Some(real) => {
                let key = load_key_file(&real.private_key_file, "alipay.private_key_file")?;
                let alipay_key_text = std::fs::read_to_string(&real.alipay_public_key_file)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "alipay.alipay_public_key_file {}: {e}",
                            real.alipay_public_key_file.display()
                        )
                    })?;
                let alipay_key = alipay::PublicKey::alipay_from_text(&alipay_key_text)
                    .map_err(|e| anyhow::anyhow!("alipay.alipay_public_key_file: {e}"))?;
                let mut config = Config::new(&real.app_id);
                config.gateway_url = real.gateway_url.clone();
                config.authorize_url = real.authorize_url().to_owned();
                config.notify_url = Some(format!("{public_url}/alipay/notify"));
                let client = Client::new(config, key, Verification::PublicKey(alipay_key.clone()))?;
                (client, alipay_key, None, real.seller_id.clone())
            }
            None => {
                let (client, sandbox, pid) = embedded_sandbox(&settings, &public_url).await?;
                let key = sandbox.ctx().public_key.clone();
                (client, key, Some(sandbox), pid)
            }
        };
        if !demo::seed_if_empty(&db, &seller_pid, sandbox.is_some()).await?
            && let demo::AccountCheck::SandboxMoved(old) =
                demo::check_receiving_account(&db, &seller_pid, sandbox.is_some()).await?
        {
            tracing::warn!(
                old = %old,
                new = %seller_pid,
                "the embedded sandbox registered OpenVend's app anew: the operator now receives under its new PID"
            );
        }
        let sandbox_url = sandbox.as_ref().map(|s| format!("http://{}", s.addr()));
        let api_token = match &settings.api_token {
            Some(t) => t.clone(),
            None => embedded_api_token(&settings.data_dir)?,
        };
        let clock = Arc::new(crate::services::Clock::default());
        let alerts = crate::alerts::Alerts::from_settings(&settings.alerts)?;
        if alerts.enabled() {
            crate::alerts::schedule(&db, clock.now_ms()).await?;
        }
        let ttl = std::time::Duration::from_secs(settings.device.command_ttl_secs);
        let terms = crate::pay::checkout::SaleTerms::new(&settings.device);
        let (device, events) = DeviceChannel::new(db.clone(), clock.clone(), ttl, terms);
        let shutdown = CancellationToken::new();
        let (mqtt, embedded_session) = start_mqtt(&settings, &device, &shutdown).await?;
        let mqtt_embedded = embedded_session.is_some();
        // The embedded broker's host is its listen address; an external broker's URL is
        // taken as it is written.
        let listen = SocketAddr::new(
            mqtt.host
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            mqtt.port,
        );
        let mqtt_url = settings.mqtt.machine_url(listen).ok_or_else(|| {
            anyhow::anyhow!(
                "mqtt.public_url: required when the embedded broker listens on every address"
            )
        })?;
        let services = Arc::new(Services {
            api_token,
            db: db.clone(),
            alipay: alipay.clone(),
            alipay_key,
            app_id: alipay.config().app_id.clone(),
            sale_terms: terms,
            clock,
            jobs_ready: tokio::sync::Notify::new(),
            job_hints: crate::jobs::JobHints::new(),
            device,
            device_settings: settings.device.clone(),
            mqtt_url,
            public_url: public_url.clone(),
            alerts,
        });
        let h5 = Arc::new(crate::h5::H5::build(
            &settings,
            services.clone(),
            sandbox_url.clone(),
            &public_url,
        )?);
        Ok(App {
            listener,
            addr,
            db,
            alipay,
            services,
            h5,
            sandbox,
            sandbox_url,
            public_url,
            mqtt,
            mqtt_embedded,
            embedded_session,
            events,
            job_workers: settings.job_workers,
            shutdown,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded sandbox's base URL, when it runs.
    pub fn sandbox_url(&self) -> Option<&str> {
        self.sandbox_url.as_deref()
    }

    /// The embedded sandbox's state (tests and the demo drive it as the buyer).
    pub fn sandbox_ctx(&self) -> Option<Arc<alipay_sandbox::Ctx>> {
        self.sandbox.as_ref().map(|s| s.ctx())
    }

    /// A token that stops the app.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The HTTP routes.
    fn router(&self) -> Router {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .merge(crate::web::notify::router().with_state(self.services.clone()))
            .merge(crate::web::api::router().with_state(self.services.clone()))
            .merge(crate::device::http::routes(self.services.device.clone()))
            .merge(crate::h5::router().with_state(self.h5.clone()))
    }

    /// Serves until the shutdown token is cancelled; reports which part stopped first.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let router = self.router();
        let token = self.shutdown.clone();
        // Handlers see the peer address (it feeds the per-IP SMS limit).
        let http = crate::web::serve::serve(self.listener, router, token.clone());
        let sandbox_task = self.sandbox.map(|s| {
            let t = s.shutdown_token();
            let stop = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    r = s.run_until_stopped() => r,
                    _ = stop.cancelled() => { t.cancel(); Ok(()) }
                }
            })
        });
        let link = match self.embedded_session {
            Some(session) => tokio::spawn(crate::device::mqtt::run_local_link(
                self.services.device.clone(),
                session,
                token.clone(),
            )),
            None => tokio::spawn(crate::device::mqtt::run_link(
                self.services.device.clone(),
                self.mqtt.clone(),
                token.clone(),
            )),
        };
        let wake = tokio::spawn(wake_on_events(
            self.events,
            self.services.clone(),
            token.clone(),
        ));
        let jobs = tokio::spawn(crate::jobs::run_dispatcher(
            self.services.clone(),
            self.job_workers,
            token.clone(),
        ));
        http.await;
        token.cancel();
        let _ = jobs.await;
        let _ = link.await;
        let _ = wake.await;
        if let Some(task) = sandbox_task {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Every accepted device event that needs acting on has queued its job in the store; this
/// hands the job to the dispatcher at once (instead of at its next sweep), and keeps the
/// channel's stream drained. It also expires unacknowledged commands now and then so the
/// ledger shows them as such, writes the acks held in memory (every
/// [`WRITE_EVERY`](crate::device::held_acks::WRITE_EVERY)) and the hand-over times no answer
/// has written (every second); all of both at shutdown.
async fn wake_on_events(
    mut events: tokio::sync::mpsc::Receiver<DeviceEvent>,
    svc: Arc<Services>,
    shutdown: CancellationToken,
) {
    use crate::device::sent_marks::FLUSH_AFTER_MS;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    let mut sent_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    sent_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held_tick = tokio::time::interval(crate::device::held_acks::WRITE_EVERY);
    held_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Err(e) = svc.device.stop_holding_acks().await {
                    tracing::warn!(error = %e, "could not write held acks");
                }
                if let Err(e) = svc.device.write_sent_marks(i64::MAX).await {
                    tracing::warn!(error = %e, "could not write command hand-over times");
                }
                return;
            }
            ev = events.recv() => match ev {
                Some(ev) => {
                    if let Some(job) = ev.job {
                        svc.run_claimed(job);
                    }
                    if let Some(key) = ev.run_soon {
                        svc.run_soon(key);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                if let Err(e) = svc.device.expire_due().await {
                    tracing::warn!(error = %e, "could not expire device commands");
                }
            }
            _ = held_tick.tick() => {
                if let Err(e) = svc.device.write_held_acks().await {
                    tracing::warn!(error = %e, "could not write held acks");
                }
            }
            _ = sent_tick.tick() => {
                let cutoff = svc.device.now_ms().saturating_sub(FLUSH_AFTER_MS);
                if let Err(e) = svc.device.write_sent_marks(cutoff).await {
                    tracing::warn!(error = %e, "could not write command hand-over times");
                }
            }
        }
    }
}

/// The MQTT side: the embedded broker (machines log in with code + secret; the server joins
/// it in memory, and over TCP with a password made for this run), or the configured external
/// broker.
async fn start_mqtt(
    settings: &Settings,
    device: &DeviceChannel,
    shutdown: &CancellationToken,
) -> anyhow::Result<(LinkSettings, Option<crate::device::broker::LocalSession>)> {
    let mut link =
        LinkSettings::from_settings(&settings.mqtt).map_err(|e| anyhow::anyhow!("{e}"))?;
    if settings.mqtt.url.is_some() {
        return Ok((link, None));
    }
    let addr: SocketAddr = settings
        .mqtt
        .embedded_listen
        .parse()
        .map_err(|e| anyhow::anyhow!("mqtt.embedded_listen: {e}"))?;
    let password: crate::config::Secret = crate::ids::random_hex(32).into();
    let embedded = crate::device::mqtt::start_embedded(
        addr,
        device.clone(),
        link.client_id.clone(),
        password.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("mqtt.embedded_listen {addr}: {e}"))?;
    link.host = embedded.listen.ip().to_string();
    link.port = embedded.listen.port();
    link.username = Some(link.client_id.clone());
    link.password = Some(password);
    let session = crate::device::mqtt::attach_local(&embedded.broker);
    Ok((link, Some(session)))
}

/// The operator API token of an install without one configured: made once, kept in the data
/// folder (readable by the owner only), printed at start.
fn embedded_api_token(dir: &Path) -> anyhow::Result<crate::config::Secret> {
    let path = dir.join("api_token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if !t.is_empty() {
            return Ok(t.into());
        }
    }
    let token = crate::ids::random_hex(40);
    write_owner_only(&path, &token)?;
    Ok(token.into())
}

pub(crate) fn write_owner_only(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

fn load_key_file(path: &Path, setting: &str) -> anyhow::Result<AppPrivateKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
    AppPrivateKey::from_text(&text).map_err(|e| anyhow::anyhow!("{setting}: {e}"))
}

/// Starts the embedded sandbox, registers OpenVend's app with it (keys kept in the data
/// folder), and returns a client pointed at it with the operator's seller PID.
async fn embedded_sandbox(
    settings: &Settings,
    public_url: &str,
) -> anyhow::Result<(Client, Sandbox, String)> {
    let dir = settings.data_dir.join("sandbox");
    let config = SandboxConfig {
        data_dir: Some(dir.clone()),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::build(config, &settings.sandbox_listen).await?;
    let key_path = dir.join("openvend_app_private_key.pem");
    let key = if key_path.exists() {
        load_key_file(&key_path, "sandbox app key")?
    } else {
        let key = AppPrivateKey::generate()?;
        write_owner_only(&key_path, &key.to_pkcs8_pem()?)?;
        key
    };
    let notify_url = format!("{public_url}/alipay/notify");
    let app = alipay_sandbox::control::register_app_config(
        &sandbox.ctx(),
        alipay_sandbox::AppConfig {
            app_id: SANDBOX_APP_ID.into(),
            public_key: key.public_key().to_spki_base64(),
            seller_pid: None,
            allowed_seller_ids: Vec::new(),
            notify_url: Some(notify_url.clone()),
            gateway_notify_url: Some(notify_url.clone()),
            // Exactly the H5 callback, as a real app registers its 授权回调地址.
            redirect_uris: vec![crate::h5::redirect_uri(public_url)],
            id_mode: settings.sandbox_id_mode,
        },
    )?;
    let mut config = Config::new(SANDBOX_APP_ID);
    config.gateway_url = sandbox.gateway_url();
    config.authorize_url = format!("http://{}/oauth2/publicAppAuthorize.htm", sandbox.addr());
    config.notify_url = Some(notify_url);
    let client = Client::new(
        config,
        key,
        Verification::PublicKey(sandbox.ctx().public_key.clone()),
    )?;
    Ok((client, sandbox, app.seller_pid))
}
