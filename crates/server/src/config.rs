//! Server configuration: defaults that run with no file, a TOML file, then environment
//! variables, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cohort_core::Limits;
use serde::Deserialize;

/// Default gRPC port (the MPC router's conventional one).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default Prometheus metrics port.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const DEFAULT_DATA_DIR: &str = "./cohort-data";
/// The file, inside the data directory, holding the coordinator key made at first start.
pub const COORDINATOR_KEY_FILE: &str = "coordinator.key";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    /// Empty string in TOML (`metrics_addr = ""`) turns the metrics endpoint off.
    #[serde(deserialize_with = "optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// `full` (fsync at every commit: nothing acknowledged is lost on power failure) or
    /// `normal` (fsync at checkpoints: survives a process crash, not a power cut).
    pub durability: String,
    /// Ed25519 public keys (hex) whose holders get the coordinator role. When empty, the
    /// server creates `coordinator.key` in the data directory and trusts its key.
    pub coordinator_keys: Vec<String>,
    /// How often the sweeper looks for expired and stalled sessions.
    pub sweep_interval_ms: u64,
    /// Development and demos only. Off (the default), a party id is bound to an identity key
    /// by enrollment (`cohort enroll`, `cohort.v1.Directory/Enroll`) before its party logs
    /// in, and an unenrolled key may log in only under its own key-derived id. On, an id
    /// nobody holds yet is bound to the first key that logs in with it: anyone who reaches
    /// the relay first can take any free id.
    pub open_enrollment: bool,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            grpc_addr: parse_addr(DEFAULT_GRPC_ADDR),
            metrics_addr: Some(parse_addr(DEFAULT_METRICS_ADDR)),
            durability: "full".into(),
            coordinator_keys: Vec::new(),
            sweep_interval_ms: 1000,
            open_enrollment: false,
            limits: Limits::default(),
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

impl Config {
    /// Loads `path` if given (it must exist), then applies `COHORT_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
                toml::from_str(&text)
                    .map_err(|e| format!("config file {} is invalid: {e}", p.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Applies `COHORT_DATA_DIR`, `COHORT_GRPC_ADDR`, `COHORT_METRICS_ADDR`, `COHORT_DURABILITY`,
    /// `COHORT_COORDINATOR_KEYS` (comma separated), `COHORT_OPEN_ENROLLMENT` (`true`/`false`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = get("COHORT_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("COHORT_GRPC_ADDR") {
            self.grpc_addr = v
                .parse()
                .map_err(|e| format!("COHORT_GRPC_ADDR {v:?}: {e}"))?;
        }
        if let Some(v) = get("COHORT_METRICS_ADDR") {
            self.metrics_addr = if v.is_empty() {
                None
            } else {
                Some(
                    v.parse()
                        .map_err(|e| format!("COHORT_METRICS_ADDR {v:?}: {e}"))?,
                )
            };
        }
        if let Some(v) = get("COHORT_DURABILITY") {
            self.durability = v;
        }
        if let Some(v) = get("COHORT_COORDINATOR_KEYS") {
            self.coordinator_keys = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("COHORT_OPEN_ENROLLMENT") {
            self.open_enrollment = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" | "" => false,
                _ => {
                    return Err(format!(
                        "COHORT_OPEN_ENROLLMENT {v:?} must be \"true\" or \"false\""
                    ))
                }
            };
        }
        Ok(())
    }

    /// The limits the relay enforces, with the enrollment mode this config sets.
    pub fn relay_limits(&self) -> Limits {
        Limits {
            open_enrollment: self.open_enrollment,
            ..self.limits.clone()
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.durability.as_str(), "full" | "normal") {
            return Err(format!(
                "durability {:?} must be \"full\" or \"normal\"",
                self.durability
            ));
        }
        self.parsed_coordinator_keys()?;
        Ok(())
    }

    pub fn parsed_coordinator_keys(&self) -> Result<Vec<[u8; 32]>, String> {
        self.coordinator_keys
            .iter()
            .map(|k| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(k, &mut out).map_err(|_| {
                    format!(
                        "coordinator key {k:?} is not 64 hex characters (an Ed25519 public key)"
                    )
                })?;
                Ok(out)
            })
            .collect()
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("cohort.sqlite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_then_env_override_defaults() {
        let mut c: Config = toml::from_str(
            "grpc_addr = \"127.0.0.1:6000\"\ndurability = \"normal\"\n[limits]\nmax_payload_bytes = 10\n",
        )
        .unwrap();
        assert_eq!(c.grpc_addr.port(), 6000);
        assert_eq!(c.limits.max_payload_bytes, 10);
        assert_eq!(
            c.limits.max_recipients, 1000,
            "unset limits keep their defaults"
        );
        c.apply_env(|k| (k == "COHORT_GRPC_ADDR").then(|| "127.0.0.1:7000".to_string()))
            .unwrap();
        assert_eq!(c.grpc_addr.port(), 7000);
        assert!(c.check().is_ok());
    }

    #[test]
    fn the_readme_config_block_parses_and_shows_the_defaults() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README.md has a ```toml block");
        let shown: Config = toml::from_str(block).expect("the README's config parses");
        assert_eq!(shown, Config::default(), "the README shows the defaults");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("grpc_adr = \"x\"").is_err());
        let c = Config {
            durability: "sometimes".into(),
            ..Config::default()
        };
        assert!(c.check().unwrap_err().contains("durability"));
        let c = Config {
            coordinator_keys: vec!["zz".into()],
            ..Config::default()
        };
        assert!(c.check().unwrap_err().contains("coordinator key"));
    }

    #[test]
    fn open_enrollment_is_off_unless_the_file_or_environment_turns_it_on() {
        let mut c = Config::default();
        assert!(!c.open_enrollment && !c.relay_limits().open_enrollment);
        let mut from_file: Config = toml::from_str("open_enrollment = true\n").unwrap();
        assert!(from_file.relay_limits().open_enrollment);
        from_file
            .apply_env(|k| (k == "COHORT_OPEN_ENROLLMENT").then(|| "false".to_string()))
            .unwrap();
        assert!(!from_file.relay_limits().open_enrollment);
        c.apply_env(|k| (k == "COHORT_OPEN_ENROLLMENT").then(|| "true".to_string()))
            .unwrap();
        assert!(c.relay_limits().open_enrollment);
        let e = c
            .apply_env(|k| (k == "COHORT_OPEN_ENROLLMENT").then(|| "maybe".to_string()))
            .unwrap_err();
        assert!(e.contains("COHORT_OPEN_ENROLLMENT"), "{e}");
        // Only the top-level key sets it, not [limits].
        assert!(toml::from_str::<Config>("[limits]\nopen_enrollment = true\n").is_err());
    }
}
