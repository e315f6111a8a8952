//! The subset of Redis INFO that operators read at 3 a.m.

/// What `/cache/stats` reports about the Redis server.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RedisInfo {
    pub memory_used_mb: f64,
    pub total_keys: u64,
    /// Redis' own keyspace hit rate (all clients of this Redis).
    pub hit_rate: f64,
    pub connected_clients: u64,
    pub uptime_seconds: u64,
    pub version: String,
}

impl RedisInfo {
    /// Reads the `INFO` text (`name:value` lines) and the `DBSIZE` answer.
    #[cfg(test)]
    pub(super) fn parse(info: &str, total_keys: u64) -> Self {
        Self::combine(&[(info.to_owned(), total_keys)])
    }

    /// Reads the `INFO` text and `DBSIZE` answer of each server (one, or
    /// every primary of a cluster): memory, keys, hits and clients add up;
    /// the uptime is the shortest, the version the first server's.
    pub(super) fn combine(answers: &[(String, u64)]) -> Self {
        let field = |info: &str, name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let number = |info: &str, name: &str| field(info, name).parse::<u64>().unwrap_or_default();
        let sum = |name: &str| answers.iter().map(|(info, _)| number(info, name)).sum::<u64>();
        let hits = sum("keyspace_hits");
        let misses = sum("keyspace_misses");
        Self {
            memory_used_mb: ((sum("used_memory") as f64 / 1_048_576.0) * 100.0).round() / 100.0,
            total_keys: answers.iter().map(|(_, keys)| keys).sum(),
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                ((hits as f64 / (hits + misses) as f64) * 1e4).round() / 1e4
            },
            connected_clients: sum("connected_clients"),
            uptime_seconds: answers
                .iter()
                .map(|(info, _)| number(info, "uptime_in_seconds"))
                .min()
                .unwrap_or_default(),
            version: answers
                .first()
                .map(|(info, _)| field(info, "redis_version"))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_operators_read() {
        let info = "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\n# Clients\r\nconnected_clients:3\r\n\
                    used_memory:2097152\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n";
        let parsed = RedisInfo::parse(info, 9);
        assert_eq!(parsed.version, "7.0.15");
        assert_eq!(parsed.uptime_seconds, 42);
        assert_eq!(parsed.connected_clients, 3);
        assert_eq!(parsed.memory_used_mb, 2.0);
        assert_eq!(parsed.hit_rate, 0.75);
        assert_eq!(parsed.total_keys, 9);
    }

    #[test]
    fn cluster_primaries_add_up() {
        let node = |hits: u64, uptime: u64| {
            (
                format!("redis_version:7.0.15\r\nuptime_in_seconds:{uptime}\r\nconnected_clients:2\r\nused_memory:1048576\r\nkeyspace_hits:{hits}\r\nkeyspace_misses:1\r\n"),
                5,
            )
        };
        let combined = RedisInfo::combine(&[node(1, 40), node(3, 30)]);
        assert_eq!(combined.total_keys, 10);
        assert_eq!(combined.connected_clients, 4);
        assert_eq!(combined.memory_used_mb, 2.0);
        assert_eq!(combined.hit_rate, 0.6667);
        assert_eq!(combined.uptime_seconds, 30);
        assert_eq!(combined.version, "7.0.15");
    }
}
