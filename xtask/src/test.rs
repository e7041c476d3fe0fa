//! `cargo xtask test`: setup, build, every crate's tests, then each root suite of crate `tests` on its own, with a
//! summary table.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{self, Finished},
    progress, setup,
};

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run only this suite: a file name (without .rs) in tests/tests/, `unit` for every crate's own tests, or
    /// `harness` for the suites' helper library, `bench` for the benchmark smoke run, `fuzz` for the fuzz targets.
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// The same as `--suite NAME` (`cargo xtask test fuzz`).
    #[arg(value_name = "SUITE", conflicts_with = "suite")]
    pub name: Option<String>,
}

/// Suites known to be fast, run first and in this order; other suites follow alphabetically, `*_e2e` suites last.
const FAST_FIRST: &[&str] = &["bpf_load", "bpf_fixtures", "agent_io"];
const UNIT: &str = "unit";
/// Passing tests' printed lines are shown too: the fault, limit and pressure tests print their figures (connections
/// reset, requests failed, writes lost, recovery seconds) for the CI log.
const SHOW_OUTPUT: &str = "--show-output";
const HARNESS: &str = "harness";
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
const UNIT_LIMIT: Duration = Duration::from_secs(20 * 60);
const SUITE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The last step: `cargo xtask bench --quick` as a smoke run (every variant works, results.json is written).
const BENCH: &str = "bench";
const BENCH_LIMIT: Duration = Duration::from_secs(8 * 60);
/// The fuzz targets (crate `fuzz/`, its own workspace): built with cargo-fuzz, then each run for a bounded time.
const FUZZ: &str = "fuzz";
pub const FUZZ_TARGETS: &[&str] = &["apiserver_decode", "desired_state", "maglev"];
/// How long libFuzzer runs each target (`-max_total_time`), and the limits of one input.
const FUZZ_SECONDS: u32 = 30;
const FUZZ_INPUT_TIMEOUT_S: u32 = 3;
const FUZZ_RSS_LIMIT_MB: u32 = 2048;
/// A cold instrumented build of the fuzz crate (dev profile) takes about a third of this on 2 cores.
const FUZZ_BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);
const FUZZ_RUN_LIMIT: Duration = Duration::from_secs(3 * 60);

/// One thing the test command runs, with the cargo arguments that run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub cargo_args: Vec<String>,
    pub limit: Duration,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    TimedOut,
    /// An earlier job the rest depends on (the build) failed.
    NotRun,
}

/// A row of the summary table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub verdict: Verdict,
    pub seconds: Option<f64>,
}

/// Runs the test command; returns whether everything passed (the summary has been printed either way).
pub fn run(args: TestArgs) -> Result<bool> {
    setup::run()?;
    let root = workspace_root();
    let suites = order_suites(discover_suites(&root.join("tests/tests"))?);
    let jobs = plan(&suites, args.suite.or(args.name).as_deref())?;
    let agent_bin = target_dir(&root).join("debug/skiff-agent");
    println!("SKIFF_AGENT_BIN={}", agent_bin.display());

    let total = jobs.len();
    let mut rows = Vec::with_capacity(total);
    let mut build_failed = false;
    let mut fuzz_build_failed = false;
    for (i, job) in jobs.iter().enumerate() {
        if build_failed || (fuzz_build_failed && job.name.starts_with("fuzz:")) {
            rows.push(Row {
                name: job.name.clone(),
                verdict: Verdict::NotRun,
                seconds: None,
            });
            continue;
        }
        println!(
            "{}",
            progress::line(
                i + 1,
                total,
                &job.name,
                &format!("running `cargo {}`", job.cargo_args.join(" "))
            )
        );
        let started = Instant::now();
        let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .current_dir(&root)
            .args(&job.cargo_args)
            .env("SKIFF_AGENT_BIN", &agent_bin);
        let verdict = match cmd::run_with_limit(&mut cargo, job.limit)? {
            Finished::Exited(s) if s.success() => Verdict::Passed,
            Finished::Exited(_) => Verdict::Failed,
            Finished::TimedOut => Verdict::TimedOut,
        };
        let secs = started.elapsed().as_secs_f64();
        let word = match verdict {
            Verdict::Passed => "passed",
            Verdict::TimedOut => "TIMED OUT (killed)",
            _ => "FAILED",
        };
        println!(
            "{}",
            progress::line(i + 1, total, &job.name, &format!("{word} in {secs:.1}s"))
        );
        if job.name == "build" && verdict != Verdict::Passed {
            build_failed = true;
        }
        if job.name == FUZZ && verdict != Verdict::Passed {
            fuzz_build_failed = true;
        }
        rows.push(Row {
            name: job.name.clone(),
            verdict,
            seconds: Some(secs),
        });
    }
    print!("{}", summary(&rows));
    Ok(rows.iter().all(|r| r.verdict == Verdict::Passed))
}

/// The jobs to run: the build, then either everything or just the selected suite.
pub fn plan(suites: &[String], only: Option<&str>) -> Result<Vec<Job>> {
    let mut jobs = vec![Job {
        name: "build".into(),
        // The eBPF crate only builds for bpfel-unknown-none; agent/build.rs builds it.
        cargo_args: args(&["build", "--workspace", "--exclude", "skiff-ebpf"]),
        limit: BUILD_LIMIT,
    }];
    let unit = Job {
        name: UNIT.into(),
        cargo_args: args(&[
            "test",
            "--workspace",
            "--exclude",
            "tests",
            "--exclude",
            "skiff-ebpf",
            "--",
            SHOW_OUTPUT,
        ]),
        limit: UNIT_LIMIT,
    };
    // The suites' own harness (crate `tests`, library part): manifest rendering, helpers.
    let harness = Job {
        name: HARNESS.into(),
        cargo_args: args(&["test", "-p", "tests", "--lib"]),
        limit: UNIT_LIMIT,
    };
    let out = env::temp_dir().join("skiff-bench-smoke");
    let bench = Job {
        name: BENCH.into(),
        cargo_args: args(&[
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--",
            "bench",
            "--quick",
            "--out",
            &out.display().to_string(),
        ]),
        limit: BENCH_LIMIT,
    };
    match only {
        None => {
            jobs.push(unit);
            jobs.push(harness);
            jobs.extend(suites.iter().map(|s| suite_job(s)));
            jobs.push(bench);
            jobs.extend(fuzz_jobs(&env::temp_dir()));
        }
        Some(UNIT) => jobs.push(unit),
        // The fuzz crate is its own workspace and builds its own dependencies: the workspace build is not needed.
        Some(FUZZ) => jobs = fuzz_jobs(&env::temp_dir()),
        Some(BENCH) => jobs.push(bench),
        Some(HARNESS) => jobs.push(harness),
        Some(name) if suites.iter().any(|s| s == name) => jobs.push(suite_job(name)),
        Some(name) => bail!(
            "no suite named '{name}'; available: {UNIT}, {HARNESS}, {BENCH}, {FUZZ}, {}",
            suites.join(", ")
        ),
    }
    Ok(jobs)
}

/// `fuzz` builds every fuzz target (dev profile and no sanitizer: an optimised instrumented build of this dependency
/// tree takes over an hour on 2 cores, a dev build about 6 minutes; debug assertions and overflow checks are on), then `fuzz:<target>` runs each for `FUZZ_SECONDS` from its
/// committed corpus (new inputs go to a scratch corpus under `tmp`, crashes to fuzz/artifacts/<target>/).
pub fn fuzz_jobs(tmp: &Path) -> Vec<Job> {
    let root = workspace_root();
    let mut jobs = vec![Job {
        name: FUZZ.into(),
        cargo_args: args(&["fuzz", "build", "--dev", "--sanitizer", "none"]),
        limit: FUZZ_BUILD_LIMIT,
    }];
    for target in FUZZ_TARGETS {
        let scratch = tmp.join(format!("skiff-fuzz-corpus/{target}"));
        let seeds = root.join(format!("fuzz/corpus/{target}"));
        let mut cargo_args = args(&["fuzz", "run", "--dev", "--sanitizer", "none", target]);
        cargo_args.push(scratch.display().to_string());
        cargo_args.push(seeds.display().to_string());
        cargo_args.push("--".into());
        cargo_args.push(format!("-max_total_time={FUZZ_SECONDS}"));
        cargo_args.push(format!("-timeout={FUZZ_INPUT_TIMEOUT_S}"));
        cargo_args.push(format!("-rss_limit_mb={FUZZ_RSS_LIMIT_MB}"));
        cargo_args.push("-print_final_stats=1".into());
        cargo_args.push("-create_missing_dirs=1".into());
        jobs.push(Job {
            name: format!("{FUZZ}:{target}"),
            cargo_args,
            limit: FUZZ_RUN_LIMIT,
        });
    }
    jobs
}

fn suite_job(name: &str) -> Job {
    let mut cargo_args = args(&["test", "-p", "tests", "--test", name, "--", SHOW_OUTPUT]);
    if is_e2e(name) {
        // End-to-end suites share fixed namespace names: one test at a time.
        cargo_args.push("--test-threads=1".into());
    }
    Job {
        name: name.into(),
        cargo_args,
        limit: SUITE_LIMIT,
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn is_e2e(name: &str) -> bool {
    name.ends_with("_e2e")
}

/// Suite names: the `.rs` files directly in `dir` (each is a cargo integration-test target).
pub fn discover_suites(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if !dir.exists() {
        return Ok(names);
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    Ok(names)
}

/// Fast suites first (in `FAST_FIRST` order), then the rest alphabetically, then `*_e2e` suites alphabetically.
pub fn order_suites(mut names: Vec<String>) -> Vec<String> {
    let rank = |n: &str| match FAST_FIRST.iter().position(|f| *f == n) {
        Some(i) => i,
        None if is_e2e(n) => FAST_FIRST.len() + 1,
        None => FAST_FIRST.len(),
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    names
}

/// The summary table and the closing `N passed, N failed` line.
pub fn summary(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.name.len()).chain([5]).max().unwrap_or(5);
    let mut out = format!("\n{:<width$}  {:<9}  {:>8}\n", "suite", "result", "seconds");
    for r in rows {
        let result = match r.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed => "FAILED",
            Verdict::TimedOut => "TIMEOUT",
            Verdict::NotRun => "not run",
        };
        let secs = r.seconds.map_or("-".to_owned(), |s| format!("{s:.1}"));
        out += &format!("{:<width$}  {result:<9}  {secs:>8}\n", r.name);
    }
    let count = |f: fn(Verdict) -> bool| rows.iter().filter(|r| f(r.verdict)).count();
    let passed = count(|v| v == Verdict::Passed);
    let failed = count(|v| matches!(v, Verdict::Failed | Verdict::TimedOut));
    let skipped = count(|v| v == Verdict::NotRun);
    out += &format!("{passed} passed, {failed} failed");
    if skipped > 0 {
        out += &format!(", {skipped} skipped");
    }
    out += "\n";
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(PathBuf::from(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        args(v)
    }

    #[test]
    fn suites_are_ordered_fast_first_and_e2e_last() {
        let ordered = order_suites(names(&[
            "dataplane_e2e",
            "agent_io",
            "zeta",
            "cluster_e2e",
            "bpf_fixtures",
            "alpha",
            "bpf_load",
        ]));
        assert_eq!(
            ordered,
            names(&[
                "bpf_load",
                "bpf_fixtures",
                "agent_io",
                "alpha",
                "zeta",
                "cluster_e2e",
                "dataplane_e2e"
            ])
        );
    }

    #[test]
    fn discovers_rs_files_only() {
        let dir = env::temp_dir().join(format!("skiff-xtask-discover-{}", std::process::id()));
        fs::create_dir_all(dir.join("common")).unwrap();
        for f in ["a_e2e.rs", "b.rs", "notes.md"] {
            fs::write(dir.join(f), "").unwrap();
        }
        let mut found = discover_suites(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        found.sort();
        assert_eq!(found, names(&["a_e2e", "b"]));
    }

    #[test]
    fn full_plan_builds_then_unit_then_each_suite() {
        let jobs = plan(&names(&["bpf_load", "dataplane_e2e"]), None).unwrap();
        let order: Vec<_> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "build",
                "unit",
                "harness",
                "bpf_load",
                "dataplane_e2e",
                "bench",
                "fuzz",
                "fuzz:apiserver_decode",
                "fuzz:desired_state",
                "fuzz:maglev"
            ]
        );
        assert!(jobs[5].cargo_args.contains(&"--quick".into()));
        assert_eq!(
            jobs[3].cargo_args,
            names(&["test", "-p", "tests", "--test", "bpf_load", "--", "--show-output"])
        );
        assert_eq!(
            jobs[4].cargo_args,
            names(&[
                "test",
                "-p",
                "tests",
                "--test",
                "dataplane_e2e",
                "--",
                "--show-output",
                "--test-threads=1"
            ])
        );
        assert!(jobs[1].cargo_args.contains(&"--exclude".into()));
    }

    #[test]
    fn one_suite_plan_and_unknown_names() {
        let suites = names(&["bpf_load", "agent_io"]);
        let jobs = plan(&suites, Some("agent_io")).unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["build", "agent_io"]
        );
        let jobs = plan(&suites, Some("unit")).unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["build", "unit"]
        );
        let jobs = plan(&suites, Some("fuzz")).unwrap();
        assert_eq!(jobs.len(), 1 + FUZZ_TARGETS.len());
        assert_eq!(jobs[0].name, "fuzz");
        let err = plan(&suites, Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("bpf_load, agent_io"),
            "{err}"
        );
    }

    #[test]
    fn fuzz_jobs_build_then_run_each_target_bounded() {
        let jobs = fuzz_jobs(Path::new("/tmp/x"));
        assert_eq!(
            jobs[0].cargo_args,
            names(&["fuzz", "build", "--dev", "--sanitizer", "none"])
        );
        for (job, target) in jobs[1..].iter().zip(FUZZ_TARGETS) {
            assert_eq!(job.name, format!("fuzz:{target}"));
            let a = &job.cargo_args;
            assert_eq!(
                a[..6],
                names(&["fuzz", "run", "--dev", "--sanitizer", "none", target])
            );
            assert_eq!(a[6], format!("/tmp/x/skiff-fuzz-corpus/{target}"));
            assert!(a[7].ends_with(&format!("fuzz/corpus/{target}")), "{a:?}");
            let after: Vec<&str> = a[a.iter().position(|x| x == "--").unwrap() + 1..]
                .iter()
                .map(String::as_str)
                .collect();
            assert!(after.contains(&"-max_total_time=30"), "{after:?}");
            assert!(after.iter().any(|x| x.starts_with("-rss_limit_mb=")));
            assert!(job.limit > Duration::from_secs(30));
        }
    }

    #[test]
    fn summary_counts_and_closes_with_the_plain_line() {
        let rows = [
            Row {
                name: "build".into(),
                verdict: Verdict::Passed,
                seconds: Some(74.25),
            },
            Row {
                name: "dataplane_e2e".into(),
                verdict: Verdict::Failed,
                seconds: Some(3.0),
            },
            Row {
                name: "bpf_load".into(),
                verdict: Verdict::TimedOut,
                seconds: Some(900.0),
            },
        ];
        let s = summary(&rows);
        assert!(s.contains("build          passed         74.2\n"), "{s}");
        assert!(s.contains("dataplane_e2e  FAILED          3.0\n"), "{s}");
        assert!(s.ends_with("\n1 passed, 2 failed\n"), "{s}");

        let rows = [
            Row {
                name: "build".into(),
                verdict: Verdict::Failed,
                seconds: Some(1.0),
            },
            Row {
                name: "unit".into(),
                verdict: Verdict::NotRun,
                seconds: None,
            },
        ];
        let s = summary(&rows);
        assert!(s.contains("unit   not run           -\n"), "{s}");
        assert!(s.ends_with("\n0 passed, 1 failed, 1 skipped\n"), "{s}");
    }
}
