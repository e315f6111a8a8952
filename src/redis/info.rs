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
    pub(super) fn parse(info: &str, total_keys: u64) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let number = |name: &str| field(name).parse::<u64>().unwrap_or_default();
        let hits = number("keyspace_hits");
        let misses = number("keyspace_misses");
        Self {
            memory_used_mb: ((number("used_memory") as f64 / 1_048_576.0) * 100.0).round() / 100.0,
            total_keys,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                ((hits as f64 / (hits + misses) as f64) * 1e4).round() / 1e4
            },
            connected_clients: number("connected_clients"),
            uptime_seconds: number("uptime_in_seconds"),
            version: field("redis_version"),
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
}
