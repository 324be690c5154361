//! The gateway's own figures for the heartbeat: CPU since the previous heartbeat,
//! memory, free disk under `state_dir`, load and SoC temperature.
//!
//! Kept cheap: sysinfo refreshes only RAM and CPU times (two /proc files), load is
//! one more, the temperature one sysfs file chosen once. Whatever the system does not
//! say is `None`.

use std::path::{Path, PathBuf};

use sysinfo::{MemoryRefreshKind, System};

/// What [`Probe::sample`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemFigures {
    /// Busy share of all cores since the previous sample; `None` on the first.
    pub cpu_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
    pub load1: Option<f64>,
    pub temp_c: Option<f64>,
}

/// The state a CPU figure needs between two samples.
pub struct Probe {
    sys: Option<System>,
    primed: bool,
    thermal: Option<PathBuf>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            sys: System::new().ok(),
            primed: false,
            thermal: soc_thermal_zone(Path::new("/sys/class/thermal")),
        }
    }

    /// Reads every figure now.
    pub fn sample(&mut self, state_dir: &Path) -> SystemFigures {
        let mut figures = SystemFigures {
            disk_free_bytes: crate::store::readings::free_disk(state_dir),
            load1: System::load_average().ok().map(|l| round(l.one, 2)),
            temp_c: self.thermal.as_deref().and_then(read_millidegrees),
            ..SystemFigures::default()
        };
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            sys.refresh_cpu_usage();
            let total = sys.total_memory();
            if total > 0 {
                figures.mem_total_bytes = Some(total);
                figures.mem_used_bytes = Some(sys.used_memory());
            }
            if self.primed && !sys.cpus().is_empty() {
                figures.cpu_pct = Some(round(f64::from(sys.global_cpu_usage()), 1));
            }
            self.primed = true;
        }
        figures
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// The zone that measures the SoC: the first whose type names the CPU or SoC (a
/// Raspberry Pi's `cpu-thermal`, an x86 `x86_pkg_temp`), else the first zone.
fn soc_thermal_zone(root: &Path) -> Option<PathBuf> {
    let mut zones: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("thermal_zone"))
        })
        .collect();
    zones.sort();
    let is_soc = |zone: &PathBuf| {
        std::fs::read_to_string(zone.join("type")).is_ok_and(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("cpu") || t.contains("soc") || t.contains("x86_pkg")
        })
    };
    let zone = zones.iter().find(|z| is_soc(z)).or_else(|| zones.first())?;
    Some(zone.join("temp"))
}

/// A sysfs temperature in millidegrees Celsius, as degrees with one decimal.
fn read_millidegrees(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let milli: i64 = text.trim().parse().ok()?;
    Some(round(milli as f64 / 1000.0, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soc_zone_is_preferred_and_read_in_degrees() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(soc_thermal_zone(&dir.path().join("absent")), None);
        assert_eq!(soc_thermal_zone(dir.path()), None, "no zones");
        for (zone, kind, milli) in [
            ("thermal_zone0", "acpitz", "27800"),
            ("thermal_zone1", "cpu-thermal", "48312\n"),
        ] {
            let z = dir.path().join(zone);
            std::fs::create_dir(&z).unwrap();
            std::fs::write(z.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(z.join("temp"), milli).unwrap();
        }
        let path = soc_thermal_zone(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("thermal_zone1/temp"));
        assert_eq!(read_millidegrees(&path), Some(48.3));
        std::fs::write(&path, "n/a").unwrap();
        assert_eq!(read_millidegrees(&path), None);
    }

    #[test]
    fn cpu_is_unknown_on_the_first_sample_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = Probe::new();
        let first = probe.sample(dir.path());
        assert_eq!(first.cpu_pct, None);
        let second = probe.sample(dir.path());
        let cpu = second.cpu_pct.unwrap();
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        assert!(second.mem_total_bytes.unwrap() >= second.mem_used_bytes.unwrap());
        assert!(second.disk_free_bytes.is_some());
        assert!(second.load1.is_some());
    }
}
