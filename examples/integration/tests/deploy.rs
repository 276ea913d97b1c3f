//! The deployment files agree with the lifecycle: `deploy/kubernetes/jobs-to-kafka.yaml` gives a
//! pod time for its preStop hook and the whole shutdown budget, probes `/ready` and rolls one pod
//! at a time; `deploy/systemd/jobs_to_kafka.service` maps the exit statuses of [`ExitCodes`] to
//! systemd's restart rules, waits for the budget on stop, and passes `systemd-analyze verify`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lifecycle_hooks::{DEFAULT_BUDGET, ExitCodes};
use yaml_rust2::{Yaml, YamlLoader};

/// Time a process needs after its budget to actually exit, at the very least.
const MIN_EXIT_MARGIN: Duration = Duration::from_secs(1);

fn read(path: &str) -> String {
    // The workspace root, two levels above this package.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shutdown budget a command line gives: `--shutdown-timeout-ms N`, or the default.
fn budget_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Duration {
    let args: Vec<&str> = args.into_iter().collect();
    match args.iter().position(|a| *a == "--shutdown-timeout-ms") {
        Some(at) => Duration::from_millis(
            args.get(at + 1)
                .and_then(|v| v.parse().ok())
                .expect("--shutdown-timeout-ms takes milliseconds"),
        ),
        None => DEFAULT_BUDGET,
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn deployment() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read("deploy/kubernetes/jobs-to-kafka.yaml"))
        .expect("the manifest is valid YAML");
    assert_eq!(docs.len(), 1, "one document: the Deployment");
    let doc = docs.remove(0);
    assert_eq!(doc["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(doc["kind"].as_str(), Some("Deployment"));
    doc
}

fn container(deployment: &Yaml) -> &Yaml {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .expect("the pod has containers");
    assert_eq!(containers.len(), 1, "one container: jobs_to_kafka");
    &containers[0]
}

fn seconds(value: &Yaml, what: &str) -> Duration {
    let n = value
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is a whole number of seconds, got {value:?}"));
    Duration::from_secs(u64::try_from(n).expect("non-negative"))
}

/// How long the preStop hook delays SIGTERM: the `sleep` action or an `exec` of `sleep N`.
fn pre_stop(container: &Yaml) -> Duration {
    let hook = &container["lifecycle"]["preStop"];
    if hook.is_badvalue() {
        return Duration::ZERO;
    }
    if !hook["sleep"].is_badvalue() {
        return seconds(&hook["sleep"]["seconds"], "preStop.sleep.seconds");
    }
    let command: Vec<&str> = hook["exec"]["command"]
        .as_vec()
        .expect("preStop is a sleep action or an exec")
        .iter()
        .map(|c| c.as_str().expect("command words are strings"))
        .collect();
    let at = command
        .iter()
        .position(|c| *c == "sleep" || c.ends_with("/sleep"))
        .expect("an exec preStop here only sleeps");
    Duration::from_secs(command[at + 1].parse().expect("sleep takes seconds"))
}

fn container_budget(container: &Yaml) -> Duration {
    let args = container["args"].as_vec().map_or(&[][..], |a| a.as_slice());
    budget_of(args.iter().map(|a| a.as_str().expect("args are strings")))
}

#[test]
fn kubernetes_grace_period_covers_pre_stop_and_the_whole_budget() {
    let deployment = deployment();
    let container = container(&deployment);
    let grace = seconds(
        &deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    let pre_stop = pre_stop(container);
    let budget = container_budget(container);
    assert_eq!(budget, Duration::from_secs(25), "the demo's budget");
    assert!(
        pre_stop >= Duration::from_secs(1),
        "a preStop pause covers the endpoint race"
    );
    // The grace period counts from before preStop; SIGTERM comes only after it.
    assert!(
        grace >= pre_stop + budget + MIN_EXIT_MARGIN,
        "terminationGracePeriodSeconds {grace:?} must exceed preStop {pre_stop:?} + budget \
         {budget:?}, or the kubelet kills the pod while its exit hooks run"
    );
}

#[test]
fn kubernetes_readiness_probe_asks_ready_on_the_served_port_and_nothing_restarts_on_it() {
    let deployment = deployment();
    let container = container(&deployment);
    let probe = &container["readinessProbe"];
    assert_eq!(probe["httpGet"]["path"].as_str(), Some("/ready"));
    let ports = container["ports"]
        .as_vec()
        .expect("the container has ports");
    let port = &probe["httpGet"]["port"];
    let served = ports.iter().any(|p| match port {
        Yaml::String(name) => p["name"].as_str() == Some(name),
        Yaml::Integer(number) => p["containerPort"].as_i64() == Some(*number),
        _ => false,
    });
    assert!(
        served,
        "the probe's port {port:?} is a port of the container"
    );
    // And the demo is told to serve /ready there.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .map_or(&[][..], |a| a.as_slice())
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let http_port = args
        .iter()
        .position(|a| *a == "--http-port")
        .and_then(|at| args.get(at + 1))
        .and_then(|p| p.parse::<i64>().ok())
        .expect("jobs_to_kafka is started with --http-port");
    assert!(
        ports
            .iter()
            .any(|p| p["containerPort"].as_i64() == Some(http_port)),
        "--http-port {http_port} is a port of the container"
    );
    // /ready never flaps: one 503 means stopping or quiet, so one is enough.
    assert_eq!(probe["failureThreshold"].as_i64(), Some(1));
    assert_eq!(probe["successThreshold"].as_i64(), Some(1));
    let period = seconds(&probe["periodSeconds"], "periodSeconds");
    let timeout = seconds(&probe["timeoutSeconds"], "timeoutSeconds");
    assert!(timeout < period, "a probe ends before the next one starts");
    // A draining pod is not ready; a liveness or startup probe on /ready would kill it mid-drain.
    for kind in ["livenessProbe", "startupProbe"] {
        assert_ne!(
            container[kind]["httpGet"]["path"].as_str(),
            Some("/ready"),
            "{kind} must not use /ready"
        );
    }
}

#[test]
fn kubernetes_rolling_update_replaces_one_pod_at_a_time_without_losing_capacity() {
    let deployment = deployment();
    let spec = &deployment["spec"];
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    let rolling = &spec["strategy"]["rollingUpdate"];
    let is_zero = |v: &Yaml| v.as_i64() == Some(0) || v.as_str() == Some("0%");
    assert!(
        is_zero(&rolling["maxUnavailable"]),
        "an old pod stops only once its replacement is ready: {rolling:?}"
    );
    assert_eq!(rolling["maxSurge"].as_i64(), Some(1), "one pod at a time");
    assert!(
        seconds(&spec["minReadySeconds"], "minReadySeconds") > Duration::ZERO,
        "a new pod must stay ready a moment before it counts"
    );
    // The selector must pick the template's pods, or the Deployment is rejected.
    let labels = spec["template"]["metadata"]["labels"]
        .as_hash()
        .expect("the template has labels");
    for (key, value) in spec["selector"]["matchLabels"]
        .as_hash()
        .expect("matchLabels")
    {
        assert_eq!(labels.get(key), Some(value), "selector {key:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

const UNIT: &str = "deploy/systemd/jobs_to_kafka.service";

/// A unit file's `[section]` -> key -> values (a key may repeat).
fn parse_unit(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut sections: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "no continuation lines here: {line}");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        let section = current.as_ref().expect("a key before any section");
        sections
            .get_mut(section)
            .unwrap()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

/// A systemd time span: `35`, `35s`, `1min 30s`, `500ms`.
fn timespan(value: &str) -> Duration {
    let mut total = Duration::ZERO;
    for part in value.split_whitespace() {
        let split = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (number, unit) = part.split_at(split);
        let number: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("a time span: {value}"));
        total += match unit {
            "" | "s" | "sec" => Duration::from_secs(number),
            "ms" | "msec" => Duration::from_millis(number),
            "m" | "min" => Duration::from_secs(60 * number),
            "h" | "hr" => Duration::from_secs(3600 * number),
            other => panic!("unexpected time unit `{other}` in {value}"),
        };
    }
    total
}

#[test]
fn systemd_unit_maps_the_exit_statuses_and_waits_for_the_whole_budget() {
    let unit = parse_unit(&read(UNIT));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("[Service] {key}= once, got {other:?}"),
        }
    };
    let codes = |key: &str| -> Vec<u8> {
        one(key)
            .split_whitespace()
            .map(|c| c.parse().expect("numeric exit statuses"))
            .collect()
    };
    let policy = ExitCodes::default();

    assert_eq!(one("Type"), "notify", "READY=1 marks startup done");
    assert_eq!(one("NotifyAccess"), "main");
    // The fd store keeps stored listeners across the exit-4 restart (docs/operations.md); 0 or
    // no line would make systemd ignore FDSTORE=1.
    let store: u32 = one("FileDescriptorStoreMax")
        .parse()
        .expect("FileDescriptorStoreMax= is a number");
    assert!(
        (1..=16).contains(&store),
        "FileDescriptorStoreMax={store}: a few descriptors"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(codes("RestartForceExitStatus"), [policy.restart]);
    assert_eq!(codes("SuccessExitStatus"), [policy.restart]);
    for failure in [policy.failure, policy.forced] {
        assert!(
            !codes("SuccessExitStatus").contains(&failure),
            "exit {failure} is a failure"
        );
    }
    assert_eq!(
        one("KillMode"),
        "mixed",
        "SIGTERM to the main process only, SIGKILL to all"
    );
    assert_eq!(one("KillSignal"), "SIGTERM");

    let exec = one("ExecStart");
    let budget = budget_of(exec.split_whitespace());
    assert_eq!(budget, Duration::from_secs(25), "the demo's budget");
    let stop = timespan(one("TimeoutStopSec"));
    assert!(
        stop >= budget + MIN_EXIT_MARGIN,
        "TimeoutStopSec {stop:?} must exceed the budget {budget:?}, or systemd kills the exit hooks"
    );
    if let Some([watchdog]) = service.get("WatchdogSec").map(Vec::as_slice) {
        assert!(
            timespan(watchdog) >= Duration::from_secs(2),
            "the lifecycle pings at half the watchdog period"
        );
    }
}

/// Runs `systemd-analyze verify` on `unit_text` saved as `jobs_to_kafka.service` in a fresh
/// directory, with the program of `ExecStart=` replaced by an executable that exists (verify
/// checks that it does). Any diagnostic fails: verify exits 0 on unknown keys and bad values,
/// which it only reports.
fn verify(unit_text: &str, tag: &str) -> Result<(), String> {
    let program = unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|cmd| cmd.split_whitespace().next())
        .expect("an ExecStart= line")
        .to_owned();
    let stand_in = std::env::current_exe().unwrap();
    let text = unit_text.replace(&program, stand_in.to_str().unwrap());
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "lifecycle-hooks-verify-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs_to_kafka.service");
    std::fs::write(&path, text).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.unwrap_or_else(|e| {
        panic!(
            "cannot run systemd-analyze ({e}); install it with .ci/setup.d/40-systemd.sh \
             (Debian package `systemd`)"
        )
    });
    let diagnostics = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && diagnostics.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {diagnostics}", output.status))
    }
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if let Err(diagnostics) = verify(&read(UNIT), "unit") {
        panic!("systemd-analyze verify {UNIT}: {diagnostics}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_analyze_verify_catches_a_mistyped_value() {
    let unit = read(UNIT);
    assert!(unit.contains("\nRestart=on-failure\n"));
    let broken = unit.replace("\nRestart=on-failure\n", "\nRestart=on-failures\n");
    let diagnostics = verify(&broken, "broken").expect_err("a bad Restart= value is reported");
    assert!(diagnostics.contains("on-failures"), "{diagnostics}");
}
