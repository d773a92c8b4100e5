//! One task's build, as a Koji builder would do it in its buildroot: the
//! uploaded SRPM is unpacked and rebuilt with `rpmbuild -ba` and the
//! macros of the target's build tag (`rpm.macro.dist` and the platform's),
//! in a private `_topdir` and rpm database; `root.log` and
//! `build.log` and the packages land in the task's work directory, and a
//! non-scratch build is also filed under `packages/<n>/<v>/<r>/<arch>/`.

use crate::hub::{Hub, RpmFile, task_dir_rel};
use kojiwire::{Fault, Value, fault_code, string, structure};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn run_task(hub: &Hub, id: i64, delay_ms: u64, inject_failure: bool) {
    if delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(delay_ms));
    }
    let Some((srpm, macros, scratch)) = hub.start_task(id) else {
        return;
    };
    let task_dir = hub.root().join(task_dir_rel(id));
    let buildroot = hub.root().join("buildroots").join(id.to_string());
    let outcome = build(
        hub,
        id,
        &srpm,
        &macros,
        scratch,
        &task_dir,
        &buildroot,
        inject_failure,
    );
    let _ = std::fs::remove_dir_all(&buildroot);
    match outcome {
        Ok(Some((result, build, rpms))) => hub.close_task(id, result, build, rpms),
        Ok(None) => {} // canceled
        Err(fault) => hub.fail_task(id, fault),
    }
}

type Finished = (Value, Option<(String, String, String)>, Vec<RpmFile>);

#[allow(clippy::too_many_arguments)]
fn build(
    hub: &Hub,
    id: i64,
    srpm: &Path,
    macros: &[(String, String)],
    scratch: bool,
    task_dir: &Path,
    buildroot: &Path,
    inject_failure: bool,
) -> Result<Option<Finished>, Fault> {
    let io = |what: &str, e: std::io::Error| {
        Fault::new(fault_code::GENERIC, format!("hub double: {what}: {e}"))
    };
    std::fs::create_dir_all(task_dir).map_err(|e| io("task dir", e))?;
    std::fs::create_dir_all(buildroot.join("rpmdb")).map_err(|e| io("buildroot", e))?;
    let mut root_log = File::create(task_dir.join("root.log")).map_err(|e| io("root.log", e))?;
    let _ = writeln!(
        root_log,
        "DEBUG buildroot {} for task {id}: private _topdir, macros {macros:?}",
        buildroot.display()
    );
    let defines = |cmd: &mut Command| {
        cmd.arg("--define")
            .arg(format!("_topdir {}", buildroot.display()))
            .arg("--define")
            .arg(format!("_dbpath {}", buildroot.join("rpmdb").display()));
    };
    if inject_failure {
        let _ = std::fs::write(
            task_dir.join("build.log"),
            "Executing(%build): injected failure\nerror: Bad exit status from %build (injected by the hub double)\n",
        );
        return Err(Fault::new(
            fault_code::BUILD,
            "error building package (arch noarch), mock exited with status 1; see build.log for more information".into(),
        ));
    }
    // Unpack the SRPM (as root, `rpm -i` of a source package only writes
    // into _topdir).
    let mut install = Command::new("rpm");
    install.arg("-i").arg("--nodeps");
    defines(&mut install);
    let out = install
        .arg(srpm)
        .output()
        .map_err(|e| io("cannot run rpm", e))?;
    let _ = root_log.write_all(&out.stdout);
    let _ = root_log.write_all(&out.stderr);
    if !out.status.success() {
        return Err(Fault::new(
            fault_code::BUILD,
            "cannot unpack the SRPM; see root.log for more information".into(),
        ));
    }
    let spec = std::fs::read_dir(buildroot.join("SPECS"))
        .ok()
        .and_then(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "spec"))
        })
        .ok_or_else(|| Fault::new(fault_code::BUILD, "the SRPM holds no spec file".into()))?;
    let log_path = task_dir.join("build.log");
    let log = File::create(&log_path).map_err(|e| io("build.log", e))?;
    let log2 = log.try_clone().map_err(|e| io("build.log", e))?;
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("-ba").arg("--nodeps");
    defines(&mut cmd);
    for (name, value) in macros {
        cmd.arg("--define").arg(format!("{name} {value}"));
    }
    cmd.arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let child = cmd.spawn().map_err(|e| io("cannot run rpmbuild", e))?;
    if !hub.attach_child(id, child) {
        return Ok(None);
    }
    let success = loop {
        if let Some(ok) = hub.poll_child(id) {
            break ok;
        }
        if hub.is_canceled(id) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if hub.is_canceled(id) {
        return Ok(None);
    }
    if !success {
        return Err(Fault::new(
            fault_code::BUILD,
            "error building package (arch noarch), mock exited with status 1; see build.log for more information".into(),
        ));
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let written: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Wrote: "))
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    let mut rpms = Vec::new();
    let mut srpm_rel = Vec::new();
    let mut rpm_rel = Vec::new();
    let mut nvr = None;
    for path in &written {
        let Some(file) = path.file_name() else {
            continue;
        };
        std::fs::copy(path, task_dir.join(file)).map_err(|e| io("copy rpm", e))?;
        let info = query(path)?;
        let rel = format!("{}/{}", task_dir_rel(id), file.to_string_lossy());
        if info.arch == "src" {
            nvr = Some((
                info.name.clone(),
                info.version.clone(),
                info.release.clone(),
            ));
            srpm_rel.push(string(rel));
        } else {
            rpm_rel.push(string(rel));
        }
        rpms.push((path.clone(), info));
    }
    let Some((name, version, release)) = nvr else {
        return Err(Fault::new(
            fault_code::BUILD,
            "rpmbuild wrote no source RPM; see build.log".into(),
        ));
    };
    let build = if scratch {
        None
    } else {
        let dir = hub
            .root()
            .join("packages")
            .join(&name)
            .join(&version)
            .join(&release);
        for (path, info) in &rpms {
            let arch_dir = dir.join(&info.arch);
            std::fs::create_dir_all(&arch_dir).map_err(|e| io("packages dir", e))?;
            if let Some(file) = path.file_name() {
                std::fs::copy(path, arch_dir.join(file)).map_err(|e| io("file rpm", e))?;
            }
        }
        let logs = dir.join("data/logs/noarch");
        std::fs::create_dir_all(&logs).map_err(|e| io("logs dir", e))?;
        let _ = std::fs::copy(&log_path, logs.join("build.log"));
        let _ = std::fs::copy(task_dir.join("root.log"), logs.join("root.log"));
        Some((name, version, release))
    };
    let result = structure([
        ("rpms", Value::Array(rpm_rel)),
        ("srpms", Value::Array(srpm_rel)),
        (
            "logs",
            Value::Array(vec![
                string(format!("{}/build.log", task_dir_rel(id))),
                string(format!("{}/root.log", task_dir_rel(id))),
            ]),
        ),
        ("brootid", kojiwire::int(1)),
    ]);
    Ok(Some((
        result,
        build,
        rpms.into_iter().map(|(_, info)| info).collect(),
    )))
}

fn query(rpm: &Path) -> Result<RpmFile, Fault> {
    let out = Command::new("rpm")
        .args([
            "-qp",
            "--nosignature",
            "--qf",
            "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{ARCH}\\n%{BUILDTIME}\\n%{SIGMD5}\\n",
        ])
        .arg(rpm)
        .output()
        .map_err(|e| Fault::new(fault_code::GENERIC, format!("cannot run rpm -qp: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.lines().collect();
    if !out.status.success() || f.len() < 6 {
        return Err(Fault::new(
            fault_code::BUILD,
            format!("cannot read the header of {}", rpm.display()),
        ));
    }
    let is_src = rpm.to_string_lossy().ends_with(".src.rpm");
    Ok(RpmFile {
        name: f[0].into(),
        version: f[1].into(),
        release: f[2].into(),
        arch: if is_src { "src".into() } else { f[3].into() },
        size: std::fs::metadata(rpm).map(|m| m.len()).unwrap_or(0),
        buildtime: f[4].parse().unwrap_or(0),
        payloadhash: f[5].into(),
    })
}
