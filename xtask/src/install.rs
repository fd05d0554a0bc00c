//! `cargo xtask install`: `sgctl` into `/usr/local/sbin` and the units of
//! `packaging/` into systemd, enabled: the boot-time restore, so a reboot
//! never leaves the host without its security groups (bpffs does not
//! survive one), and `sgctl agent` (metrics, flow logs, hot-plugged
//! interfaces).
use std::{fs, path::Path, process::Command};

use anyhow::Context as _;

use crate::{build, sh};

/// Every unit in `packaging/`, installed and enabled in this order.
pub const UNITS: [&str; 2] = ["sgctl-restore.service", "sgctl-agent.service"];

/// `packaging/UNIT` with its paths moved from `/usr/local` to `prefix`
/// (`/usr` for the Debian package): the binary and the documentation. The
/// units' contents are otherwise installed as they are.
pub fn unit_text(unit: &str, prefix: &Path) -> anyhow::Result<String> {
    let path = sh::root().join("packaging").join(unit);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .replace("/usr/local/sbin/sgctl", &prefix.join("sbin/sgctl").display().to_string())
        .replace("/usr/local/share/doc", &prefix.join("share/doc").display().to_string()))
}

pub fn run(prefix: &Path, enable: bool) -> anyhow::Result<()> {
    sh::require_root("install")?;
    build::run()?;
    let bin_dir = prefix.join("sbin");
    fs::create_dir_all(&bin_dir)?;
    let bin = bin_dir.join("sgctl");
    // Copy beside, then rename: a running sgctl keeps its old binary.
    let tmp = bin_dir.join(".sgctl.new");
    fs::copy(build::sgctl_path(), &tmp).with_context(|| format!("copying sgctl to {}", tmp.display()))?;
    fs::rename(&tmp, &bin)?;
    sh::step("install", &format!("{} installed", bin.display()));

    let doc = prefix.join("share/doc/sgctl");
    fs::create_dir_all(&doc)?;
    fs::copy(sh::root().join("README.md"), doc.join("README.md"))?;

    fs::create_dir_all("/etc/systemd/system")?;
    for unit in UNITS {
        let unit_path = Path::new("/etc/systemd/system").join(unit);
        fs::write(&unit_path, unit_text(unit, prefix)?).with_context(|| format!("writing {}", unit_path.display()))?;
        sh::step("install", &format!("{} installed", unit_path.display()));
    }

    if !Path::new("/run/systemd/system").exists() {
        sh::step("install", "systemd is not running here: enable the units on the machine that boots with them");
        return Ok(());
    }
    sh::run(Command::new("systemctl").arg("daemon-reload"))?;
    if enable {
        for unit in UNITS {
            sh::run(Command::new("systemctl").args(["enable", unit]))?;
        }
        sh::step("install", "sgctl-restore.service enabled: the applied policy is restored at every boot");
        sh::step("install", "sgctl-agent.service enabled: metrics on 127.0.0.1:9617, flow logs in /var/log/sgctl");
    }
    Ok(())
}
