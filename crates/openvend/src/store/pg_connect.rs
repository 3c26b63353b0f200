//! Opening the socket under a PostgreSQL connection. The store opens it itself, to put
//! [`super::pg_socket::OneSync`] between it and tokio-postgres (`Config::connect_raw`), so the
//! configured hosts and socket options are followed here as tokio-postgres's own `connect`
//! follows them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's socket: TCP, or a Unix socket when the host is a directory.
pub enum PgSocket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// Where a connection may be opened: the configured hosts in order, each with its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(host, port) => write!(f, "{host}:{port}"),
            #[cfg(unix)]
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The configured hosts, checked as tokio-postgres's own `connect` checks them.
/// `load_balance_hosts=random` is not followed: hosts are tried in the order given.
/// `target_session_attrs=read-only` is refused.
pub fn targets(config: &tokio_postgres::Config) -> Result<Vec<Target>, String> {
    use tokio_postgres::config::Host;
    let (hosts, addrs, ports) = (
        config.get_hosts(),
        config.get_hostaddrs(),
        config.get_ports(),
    );
    if hosts.is_empty() && addrs.is_empty() {
        return Err("the database URL names no host".into());
    }
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(format!(
            "the database URL has {} hosts and {} hostaddrs",
            hosts.len(),
            addrs.len()
        ));
    }
    if config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadOnly {
        return Err("target_session_attrs=read-only is not supported: OpenVend writes".into());
    }
    let count = hosts.len().max(addrs.len());
    if ports.len() > 1 && ports.len() != count {
        return Err(format!(
            "the database URL has {} ports for {count} hosts",
            ports.len()
        ));
    }
    let mut targets = Vec::with_capacity(count);
    for i in 0..count {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        targets.push(match (addrs.get(i), hosts.get(i)) {
            (Some(addr), _) => Target::Tcp(addr.to_string(), port),
            (None, Some(Host::Tcp(host))) => Target::Tcp(host.clone(), port),
            #[cfg(unix)]
            (None, Some(Host::Unix(dir))) => Target::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            (None, None) => return Err("the database URL names no host".into()),
        });
    }
    Ok(targets)
}

/// Opens a socket to `target`: each of a host name's addresses in turn, each within the
/// connect timeout, with the configured TCP keepalives and user timeout.
pub async fn connect(config: &tokio_postgres::Config, target: &Target) -> io::Result<PgSocket> {
    let limit = config.get_connect_timeout().copied();
    match target {
        Target::Tcp(host, port) => {
            let addrs: Vec<_> = within_limit(limit, async {
                Ok(tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .collect())
            })
            .await?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
            for addr in addrs {
                match within_limit(limit, tokio::net::TcpStream::connect(addr)).await {
                    Ok(stream) => return tcp_options(config, stream).map(PgSocket::Tcp),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        #[cfg(unix)]
        Target::Unix(path) => Ok(PgSocket::Unix(
            within_limit(limit, tokio::net::UnixStream::connect(path)).await?,
        )),
    }
}

/// `attempt`, failed as timed out if it takes longer than `limit`.
async fn within_limit<T>(
    limit: Option<std::time::Duration>,
    attempt: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => attempt.await,
    }
}

/// The socket options tokio-postgres sets on its own TCP sockets.
fn tcp_options(
    config: &tokio_postgres::Config,
    stream: tokio::net::TcpStream,
) -> io::Result<tokio::net::TcpStream> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(&stream);
    if config.get_keepalives() {
        let keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        #[cfg(not(any(target_os = "redox", target_os = "solaris", target_os = "openbsd")))]
        let keepalive = match config.get_keepalives_interval() {
            Some(interval) => keepalive.with_interval(interval),
            None => keepalive,
        };
        #[cfg(not(any(
            target_os = "redox",
            target_os = "solaris",
            target_os = "windows",
            target_os = "openbsd"
        )))]
        let keepalive = match config.get_keepalives_retries() {
            Some(retries) => keepalive.with_retries(retries),
            None => keepalive,
        };
        socket.set_tcp_keepalive(&keepalive)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(timeout) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout))?;
    }
    Ok(stream)
}

impl AsyncRead for PgSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgSocket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            PgSocket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgSocket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            PgSocket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgSocket::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            PgSocket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgSocket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            PgSocket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_the_url_as_tokio_postgres_takes_them() {
        let config = |url: &str| url.parse::<tokio_postgres::Config>().unwrap();
        assert_eq!(
            targets(&config("postgres://u@db1:5433,db2/openvend")).unwrap(),
            vec![
                Target::Tcp("db1".into(), 5433),
                Target::Tcp("db2".into(), 5432)
            ]
        );
        assert_eq!(
            targets(&config("host=10.0.0.1,10.0.0.2 port=6432 user=u")).unwrap(),
            vec![
                Target::Tcp("10.0.0.1".into(), 6432),
                Target::Tcp("10.0.0.2".into(), 6432)
            ]
        );
        assert_eq!(
            targets(&config("host=/run/postgresql user=u")).unwrap(),
            vec![Target::Unix("/run/postgresql/.s.PGSQL.5432".into())]
        );
        for refused in [
            "user=u",
            "host=a,b,c port=1,2 user=u",
            "postgres://u@db/openvend?target_session_attrs=read-only",
        ] {
            assert!(targets(&config(refused)).is_err(), "{refused}");
        }
    }
}
