//! How connections are made in each `redis.mode`: one server, the primary
//! the sentinels name, or a Redis Cluster. Everything above (pool, breaker,
//! timeouts, the cache and the rate limiter) sees one connection type,
//! [`RedisConnection`], whatever the mode.
//!
//! - Sentinel: every new connection asks the sentinels for the current
//!   primary (redis-rs checks its ROLE too), so once a lost connection has
//!   replaced the pool, the next connections reach the promoted replica. A
//!   replica backend (`read_from_replicas`) asks for a random replica the
//!   same way.
//! - Cluster: redis-rs' cluster connection follows MOVED/ASK and slot changes
//!   itself; commands without a key are routed to every primary by the
//!   callers that need it (SCAN, INFO).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::config::{RedisMode, RedisSettings};

/// Where connections come from.
pub enum Backend {
    Standalone(redis::Client),
    Sentinel {
        /// `&mut` to ask: the sentinels' connections are cached inside.
        client: tokio::sync::Mutex<SentinelClient>,
        service: String,
        /// A client per discovered primary: TLS certificates for a private CA.
        certificates: Option<Vec<u8>>,
    },
    Cluster {
        client: ClusterClient,
        /// Standalone clients of the seed nodes, for pub/sub subscriptions.
        seeds: Vec<redis::Client>,
        next_seed: AtomicUsize,
    },
}

/// Turns `host:port` into `redis://host:port` (URLs are kept as they are).
fn as_url(address: &str, tls: bool) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_owned()
    } else if tls {
        format!("rediss://{address}")
    } else {
        format!("redis://{address}")
    }
}

fn client_for(url: &str, certificates: Option<&[u8]>) -> RedisResult<redis::Client> {
    match certificates {
        None => redis::Client::open(url),
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
    }
}

impl Backend {
    /// Builds the clients of `settings.mode` without connecting. With
    /// `replicas` (sentinel mode only), connections go to the replicas the
    /// sentinels name instead of the primary.
    pub fn open(settings: &RedisSettings, certificates: Option<Vec<u8>>, replicas: bool) -> RedisResult<Self> {
        let url = settings.url.expose();
        if replicas && settings.mode != RedisMode::Sentinel {
            return Err(invalid("only sentinel mode reads from replicas"));
        }
        match settings.mode {
            RedisMode::Standalone => Ok(Self::Standalone(client_for(url, certificates.as_deref())?)),
            RedisMode::Sentinel => {
                let sentinel = &settings.sentinel;
                if sentinel.service_name.trim().is_empty() || sentinel.addresses.is_empty() {
                    return Err(invalid(
                        "redis.mode = \"sentinel\" needs redis.sentinel.service_name and redis.sentinel.addresses",
                    ));
                }
                // The primary's credentials, database and TLS come from redis.url.
                let primary = url.into_connection_info()?;
                let tls = super::is_tls_url(url);
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(primary.redis_settings().clone());
                if tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let addresses: Vec<String> = sentinel.addresses.iter().map(|a| as_url(a.expose(), false)).collect();
                let client = SentinelClient::build(
                    addresses,
                    sentinel.service_name.trim(),
                    Some(node),
                    if replicas {
                        SentinelServerType::Replica
                    } else {
                        SentinelServerType::Master
                    },
                )?;
                Ok(Self::Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    service: sentinel.service_name.trim().to_owned(),
                    certificates,
                })
            }
            RedisMode::Cluster => {
                let tls = super::is_tls_url(url);
                let nodes: Vec<String> = settings.cluster.nodes.iter().map(|n| as_url(n.expose(), tls)).collect();
                if nodes.is_empty() {
                    return Err(invalid("redis.mode = \"cluster\" needs redis.cluster.nodes"));
                }
                let seeds = nodes
                    .iter()
                    .map(|n| client_for(n, certificates.as_deref()))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1)))
                    .response_timeout(super::ADMIN_COMMAND_TIMEOUT)
                    // The callers' own timeouts bound a command; the breaker
                    // and the database cover the rest.
                    .retries(2);
                if let Some(pem) = certificates {
                    builder = builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    });
                }
                Ok(Self::Cluster {
                    client: builder.build()?,
                    seeds,
                    next_seed: AtomicUsize::new(0),
                })
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// The client of the current primary (sentinel: asked now; a random
    /// replica for a replica backend).
    async fn primary(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Standalone(client) => Ok(client.clone()),
            Self::Sentinel {
                client, certificates, ..
            } => {
                let found = client.lock().await.async_get_client().await?;
                match certificates {
                    None => Ok(found),
                    Some(pem) => client_for(&connection_url(found.get_connection_info()), Some(pem)),
                }
            }
            Self::Cluster { seeds, next_seed, .. } => {
                // Any node: PUBLISH reaches every node of a cluster.
                let index = next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len().max(1);
                seeds
                    .get(index)
                    .cloned()
                    .ok_or_else(|| invalid("redis.cluster.nodes is empty"))
            }
        }
    }

    /// A new connection of this mode.
    pub async fn connect(&self) -> RedisResult<RedisConnection> {
        match self {
            Self::Cluster { client, .. } => Ok(RedisConnection::Cluster(client.get_async_connection().await?)),
            _ => Ok(RedisConnection::Single(
                self.primary().await?.get_multiplexed_async_connection().await?,
            )),
        }
    }

    /// A pub/sub connection: to the primary, or (cluster) to one node, a
    /// different one on each call so a dead node is not retried forever.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        self.primary().await?.get_async_pubsub().await
    }

    /// Where Redis is, for messages (never a password).
    pub fn describe(&self, settings: &RedisSettings) -> String {
        match self {
            Self::Standalone(_) => settings.url.address(6379),
            Self::Sentinel { service, .. } => format!(
                "sentinel primary `{service}` via {}",
                addresses(&settings.sentinel.addresses, 26379)
            ),
            Self::Cluster { .. } => format!("cluster via {}", addresses(&settings.cluster.nodes, 6379)),
        }
    }
}

/// `host:port,host:port` of a list of addresses or URLs (passwords left out).
fn addresses(list: &[crate::config::Secret], default_port: u16) -> String {
    list.iter()
        .map(|a| crate::config::Secret::new(as_url(a.expose(), false)).address(default_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `rediss://` URL for a discovered primary with the credentials of its
/// connection info (only needed to attach a private CA).
fn connection_url(info: &redis::ConnectionInfo) -> String {
    let settings = info.redis_settings();
    let credentials = match (settings.username(), settings.password()) {
        (Some(user), Some(password)) => format!("{}:{}@", encode(user), encode(password)),
        (None, Some(password)) => format!(":{}@", encode(password)),
        _ => String::new(),
    };
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port)
        }
        other => (other.to_string(), 6379),
    };
    format!("rediss://{credentials}{host}:{port}/{}", settings.db())
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn invalid(message: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::InvalidClientConfig, message))
}

/// One pooled connection: a multiplexed connection to one server (standalone,
/// sentinel) or a cluster connection. Both are cheap clones of a shared one.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// `cmd` on the server at `host:port` (cluster), or on the one server.
    pub async fn query_on<T: redis::FromRedisValue>(&mut self, node: Option<&str>, cmd: Cmd) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(connection), Some(node)) => {
                let (host, port) = node
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| invalid("cluster node address without a port"))?;
                let value = connection
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                    )
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
            (connection, _) => cmd.query_async(connection).await,
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// bb8's connection manager over a [`Backend`].
pub struct Manager(pub std::sync::Arc<Backend>);

impl bb8::ManageConnection for Manager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.0.connect().await
    }

    async fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async::<String>(connection).await.map(|_| ())
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// The primaries of a cluster (`host:port`) that serve slots, from
/// `CLUSTER NODES`: a primary that lost its slots in a failover is skipped.
pub fn primaries_with_slots(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serves_slots = fields.len() > 8;
            if !flags.split(',').any(|f| f == "master") || !serves_slots {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let address = fields.get(1)?.split('@').next()?;
            Some(address.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_serving_slots_are_listed() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master - 0 0 4 connected 10923-16383
";
        assert_eq!(
            primaries_with_slots(nodes),
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7004"]
        );
    }

    #[test]
    fn bare_addresses_become_urls() {
        assert_eq!(as_url("10.0.0.1:26379", false), "redis://10.0.0.1:26379");
        assert_eq!(as_url("10.0.0.1:6379", true), "rediss://10.0.0.1:6379");
        assert_eq!(as_url("redis://:pw@h:1", true), "redis://:pw@h:1");
    }
}
