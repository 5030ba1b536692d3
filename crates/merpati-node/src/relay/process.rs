//! The relay process's own metrics, read from `/proc` at each scrape: resident memory, open file
//! descriptors and their limit (a relay holds one per connection, so running out of them is how a
//! busy relay fails first), and the build it runs.
//!
//! On systems without `/proc` the process metrics are left out; the build info is always there.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Registers `merpati_build_info{version}` and the process metrics in `registry`.
pub fn register(registry: &mut Registry) {
    let r = registry.sub_registry_with_prefix("merpati");
    r.register(
        "build",
        "The running build",
        Info::new(vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
    );
    r.register_collector(Box::new(ProcessCollector));
}

/// Reads the process figures on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let figures = [
            ("process_resident_memory_bytes", "Resident memory of the relay process", resident_bytes()),
            ("process_open_fds", "File descriptors the relay process has open", open_fds()),
            ("process_max_fds", "The most file descriptors the relay process may open", max_fds()),
        ];
        for (name, help, value) in figures {
            let Some(value) = value.and_then(|v| i64::try_from(v).ok()) else { continue };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Entries of `/proc/self/fd`.
fn open_fds() -> Option<u64> {
    Some(fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_figures_are_served() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("merpati_build_info{{version=\"{version}\"}} 1")), "{text}");
        if cfg!(target_os = "linux") {
            let value = |name: &str| -> u64 {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{text}"));
                line.split(' ').nth(1).unwrap().parse().unwrap()
            };
            assert!(value("merpati_process_resident_memory_bytes") > 1024 * 1024);
            let (open, max) = (value("merpati_process_open_fds"), value("merpati_process_max_fds"));
            assert!(open >= 3 && open <= max, "{open} of {max}");
        }
    }
}
