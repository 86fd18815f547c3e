//! The connection to the store: one Redis, or a Redis Cluster (`redis+cluster://h1:p1,h2:p2`).
//!
//! Either connects on first use and again after a failure, so that the server starts and serves
//! (from Postgres) without Redis. The cluster client follows `MOVED` and `ASK` itself, and finds
//! the new master of a slot after a failover.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::RESPONSE_TIMEOUT;

/// The scheme of a `REDIS_URL` that names a cluster by some of its nodes.
pub(super) const CLUSTER_SCHEME: &str = "redis+cluster://";

#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// A cluster's client, and its connection once made (it follows the cluster's changes itself).
pub(super) struct Cluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl Connection {
    /// A connection to `url`: `redis://…` (one Redis) or `redis+cluster://…`.
    pub(super) fn open(url: &str) -> Result<Connection, RedisError> {
        if let Some(nodes) = cluster_nodes(url)? {
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(RESPONSE_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // A slot whose master has failed is unavailable until a replica takes over
                // (seconds): a query meanwhile reads Postgres, a batch is tried again.
                .retries(2)
                .build()?;
            return Ok(Connection::Cluster(Arc::new(Cluster { client, connection: OnceCell::new() })));
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        Ok(Connection::Single(ConnectionManager::new_lazy_with_config(client, config)?))
    }
}

impl Cluster {
    /// The cluster's connection, made on first use (and tried again on the next if it failed).
    /// Made by a task of its own: a caller that gives up waiting (a query's 250 ms) does not
    /// cancel it, so that the next caller finds it made.
    async fn connection(self: &Arc<Self>) -> Result<ClusterConnection, RedisError> {
        if let Some(made) = self.connection.get() {
            return Ok(made.clone());
        }
        let cluster = self.clone();
        let making = tokio::spawn(async move {
            let made = cluster.connection.get_or_try_init(|| async {
                tokio::time::timeout(RESPONSE_TIMEOUT * 3, cluster.client.get_async_connection())
                    .await
                    .map_err(|_| RedisError::from((ErrorKind::Io, "no node of the Redis Cluster answered in time")))?
            });
            made.await.cloned()
        });
        making
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "the connection to the Redis Cluster was not made")))?
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(single) => single.req_packed_command(cmd),
            Connection::Cluster(cluster) => {
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(single) => single.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => {
                Box::pin(async move { cluster.connection().await?.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(single) => single.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}

/// The nodes a `redis+cluster://[user:password@]host:port,host:port` URL names, as `redis://`
/// URLs (the credentials go to each); `None` for any other URL.
pub(super) fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, RedisError> {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
        return Ok(None);
    };
    let invalid = |why: &str| RedisError::from((ErrorKind::InvalidClientConfig, "invalid cluster URL", why.to_owned()));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(invalid(
            "a cluster has no database number and takes no options: redis+cluster://host:port,host:port",
        ));
    }
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, rest),
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let Some((name, port)) = host.rsplit_once(':') else {
            return Err(invalid("each node is host:port"));
        };
        if name.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid("each node is host:port"));
        }
        nodes.push(match credentials {
            Some(credentials) => format!("redis://{credentials}@{host}"),
            None => format!("redis://{host}"),
        });
    }
    Ok(Some(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_nodes_and_gives_each_the_credentials() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/0").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            Some(vec!["redis://10.0.0.1:7000".to_owned(), "redis://10.0.0.2:7001".to_owned()])
        );
        assert_eq!(
            cluster_nodes("redis+cluster://bank:s3cret@h1:7000,h2:7000/").unwrap(),
            Some(vec!["redis://bank:s3cret@h1:7000".to_owned(), "redis://bank:s3cret@h2:7000".to_owned()])
        );
        for bad in ["redis+cluster://h1:7000/3", "redis+cluster://h1", "redis+cluster://h1:x", "redis+cluster://:7000"]
        {
            assert!(cluster_nodes(bad).is_err(), "{bad}");
        }
    }
}
