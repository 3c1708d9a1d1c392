//! The files a newcomer reads stay true: the README's configuration table and curl examples, the
//! compose file and the Dockerfile, the CLI's help.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clap::CommandFactory;
use prospect_api::cli::Cli;

use crate::helpers::{ADMIN_TOKEN, spawn_configured_app};

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every environment variable the code reads: those behind clap arguments, plus direct reads.
fn settings_read_by_the_code() -> BTreeSet<String> {
    fn collect(command: &clap::Command, names: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, names);
        }
    }
    let mut names = BTreeSet::new();
    collect(&Cli::command(), &mut names);
    // Read outside clap: tracing's EnvFilter reads RUST_LOG.
    names.insert("RUST_LOG".to_owned());
    names
}

/// Every Rust file under src/, with its text.
fn source_files() -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((path, text));
        }
    }
    files
}

/// Direct environment reads in src/ (`env::var("X")`): each must be a setting we know of.
fn direct_env_reads() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (_, text) in source_files() {
        for piece in text.split("env::var(\"").skip(1) {
            found.insert(piece.split('"').next().unwrap().to_owned());
        }
    }
    found
}

/// SQL reaches the database only through sqlx's query macros, whose SQL is a string literal checked
/// against the schema at compile time: every value is a bound parameter, and no code path builds SQL
/// from text (the runtime functions and `AssertSqlSafe` are how it would).
#[test]
fn all_sql_in_src_goes_through_the_compile_time_checked_macros() {
    let runtime_sql = [
        "sqlx::query(",
        "sqlx::query_as(",
        "sqlx::query_scalar(",
        "sqlx::raw_sql(",
        "query_with(",
        "query_as_with(",
        "query_scalar_with(",
        "AssertSqlSafe",
        "_unchecked!(",
        "QueryBuilder",
    ];
    let mut offending = Vec::new();
    let mut macro_calls = 0;
    for (path, text) in source_files() {
        macro_calls += text.matches("query!(").count()
            + text.matches("query_as!(").count()
            + text.matches("query_scalar!(").count();
        for pattern in runtime_sql {
            if text.contains(pattern) {
                offending.push(format!("{}: {pattern}", path.display()));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "SQL outside the macros: {offending:?}"
    );
    assert!(macro_calls > 20, "{macro_calls} macro calls found");
}

/// The rows of the README's configuration table, each after its opening "| `".
fn readme_configuration_rows() -> Vec<String> {
    let readme = repository_file("README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap();
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_configuration_table_lists_exactly_the_settings_the_code_reads() {
    let listed: BTreeSet<String> = readme_configuration_rows()
        .iter()
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect();
    let read = settings_read_by_the_code();
    let unlisted: Vec<&String> = read.difference(&listed).collect();
    let unknown: Vec<&String> = listed.difference(&read).collect();
    assert!(
        unlisted.is_empty(),
        "settings the code reads but the README's table does not list: {unlisted:?}"
    );
    assert!(
        unknown.is_empty(),
        "settings the README lists but the code does not read: {unknown:?}"
    );
    let direct: Vec<String> = direct_env_reads()
        .into_iter()
        .filter(|name| !read.contains(name))
        .collect();
    assert!(
        direct.is_empty(),
        "src/ reads environment variables outside the configuration: {direct:?}"
    );
}

/// Each setting's default, as clap declares it: what the README's table must say.
fn defaults_declared_by_the_code() -> BTreeSet<(String, Option<String>)> {
    fn collect(command: &clap::Command, found: &mut BTreeSet<(String, Option<String>)>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let default = arg.get_default_values().first();
                let default = default.map(|value| value.to_string_lossy().into_owned());
                found.insert((env.to_string_lossy().into_owned(), default));
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, found);
        }
    }
    let mut found = BTreeSet::new();
    collect(&Cli::command(), &mut found);
    let log_filter = prospect_api::telemetry::DEFAULT_LOG_FILTER.to_owned();
    found.insert(("RUST_LOG".to_owned(), Some(log_filter)));
    found
}

#[test]
fn the_readme_configuration_table_gives_each_default_as_the_code_declares_it() {
    let cells: BTreeMap<String, String> = readme_configuration_rows()
        .iter()
        .map(|rest| {
            let mut columns = rest.split(" | ");
            let name = columns.next().unwrap().trim_end_matches('`').to_owned();
            (name, columns.next().unwrap_or_default().trim().to_owned())
        })
        .collect();
    let mut wrong = Vec::new();
    for (name, default) in defaults_declared_by_the_code() {
        let cell = &cells[&name];
        let says_a_value = cell.starts_with('`');
        let right = match &default {
            Some(value) => cell.starts_with(&format!("`{value}`")),
            None => !says_a_value,
        };
        if !right {
            wrong.push(format!(
                "{name}: the README says {cell}, the code's default is {default:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What the product never holds: exports, screenshots, logs and profiles are made by running it.
const GENERATED_OUTPUT: &[&str] = &[".csv", ".png", ".jpg", ".log", ".svg", "perf.data"];

#[test]
fn the_repository_holds_no_generated_output() {
    let listed = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert!(listed.status.success(), "git ls-files failed");
    let files: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(files.iter().any(|f| f == "Cargo.toml"), "{files:?}");
    let generated: Vec<&String> = files
        .iter()
        .filter(|file| GENERATED_OUTPUT.iter().any(|kind| file.ends_with(kind)))
        .collect();
    assert!(
        generated.is_empty(),
        "generated output in the repository (delete it; .gitignore keeps it out): {generated:?}"
    );
}

#[test]
fn every_flag_of_every_command_explains_itself() {
    fn check(command: &clap::Command, path: &str) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(
                arg.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "{path} --{id} has no help"
            );
        }
        for sub in command.get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{path} {} has no description",
                sub.get_name()
            );
            check(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    Cli::command().debug_assert();
    check(&Cli::command(), "prospect-api");
}

#[test]
fn the_compose_file_runs_what_the_configuration_expects() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&repository_file("docker-compose.yml")).unwrap();
    let services = &compose["services"];
    let db = &services["db"];
    let api = &services["api"];

    let image = db["image"].as_str().unwrap();
    let major: u32 = image
        .trim_start_matches("postgres:")
        .split(['.', '-'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(major >= 15, "a current PostgreSQL: {image}");
    assert!(
        db["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().contains("pg_isready"))
    );
    let volume = db["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        compose["volumes"].get(volume).is_some(),
        "the data lives in the named volume {volume}"
    );

    assert_eq!(api["build"].as_str(), Some("."));
    assert_eq!(
        api["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(api["command"][0].as_str(), Some("serve"));
    assert!(
        api["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|c| c.as_str() == Some("--demo"))
    );
    assert!(api["ports"][0].as_str().unwrap().ends_with(":8080"));
    assert!(
        api["environment"].get("ACCESS_POLICY").is_some(),
        "bound to 0.0.0.0, the API refuses to start without a policy"
    );

    let known = settings_read_by_the_code();
    let environment = api["environment"].as_mapping().unwrap();
    for (name, value) in environment {
        let name = name.as_str().unwrap();
        assert!(
            known.contains(name),
            "the compose file sets {name}, which the code does not read"
        );
        let value = value.as_str().unwrap_or_default();
        // What the config would accept: try the same parsers.
        match name {
            "ADMIN_TOKEN" => assert!(
                value.parse::<prospect_api::config::AdminToken>().is_ok(),
                "ADMIN_TOKEN too short"
            ),
            "DATABASE_URL" => {
                let url: prospect_api::config::DatabaseUrl = value.parse().unwrap();
                assert!(
                    url.expose().contains("@db:5432/"),
                    "the API reaches the db service: {value}"
                );
            }
            "BIND_ADDR" => assert_eq!(value, "0.0.0.0:8080"),
            "JWT_SECRET" => assert!(
                value.parse::<prospect_api::config::JwtSecret>().is_ok(),
                "JWT_SECRET too short"
            ),
            "ACCESS_POLICY" => {
                // The file is mounted from the repository: it must be a policy the server loads.
                let mount = api["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v.as_str())
                    .find(|v| v.split(':').nth(1) == Some(value))
                    .unwrap_or_else(|| panic!("nothing is mounted at {value}"));
                let source = mount.split(':').next().unwrap();
                let policy = prospect_api::access::Policy::load(
                    &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source),
                    &prospect_api::access::restriction::known_columns(),
                )
                .unwrap();
                assert!(policy.enforced());
            }
            _ if name.starts_with("REFRESH_") => {
                prospect_api::config::parse_duration(value).unwrap();
            }
            _ => {}
        }
    }
}

#[test]
fn the_dockerfile_builds_offline_in_stages_and_runs_as_a_user() {
    let dockerfile = repository_file("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage");
    assert!(dockerfile.contains("SQLX_OFFLINE=true"));
    assert!(dockerfile.contains("--locked"));
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert_ne!(user.trim(), "0");
    assert!(dockerfile.contains("EXPOSE 8080"));
    for copied in dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
    {
        for path in copied.split_whitespace().rev().skip(1) {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            assert!(
                path.exists(),
                "the Dockerfile copies {} which does not exist",
                path.display()
            );
        }
    }
    // Every file the build reads into the binary (include_str!, include_bytes!, sqlx::migrate!)
    // must be in the build stage.
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| l.split_whitespace().rev().skip(1))
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut included = 0;
    for (file, text) in source_files() {
        for piece in text
            .split("include_str!(\"")
            .chain(text.split("include_bytes!(\""))
            .skip(1)
        {
            let Some(relative) = piece.split('"').next() else {
                continue;
            };
            let target = file.parent().unwrap().join(relative);
            let Ok(target) = target.canonicalize() else {
                continue;
            };
            let inside = target.strip_prefix(root.canonicalize().unwrap()).unwrap();
            let top = inside
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            assert!(
                copied.contains(&top),
                "{} includes {} but the Dockerfile does not copy {top}",
                file.display(),
                inside.display()
            );
            included += 1;
        }
    }
    assert!(included > 0, "the check found the binary's included files");
}

/// A curl command of the README and what it is expected to do.
struct CurlExample {
    command: String,
    /// `# expect NNN`; without it, 2xx or 304.
    status: Option<u16>,
    /// `# first: NAME`: the `full_name` of the first row answered.
    first: Option<String>,
    /// In the "Access control" section: run against a server enforcing the example policy.
    guarded: bool,
}

/// The curl commands of the README's shell blocks, one per entry.
fn readme_curl_examples() -> Vec<CurlExample> {
    let readme = repository_file("README.md");
    let mut examples = Vec::new();
    for section in readme.split("\n## ") {
        let guarded = section.starts_with("Access control");
        for block in section.split("```sh\n").skip(1) {
            let block = block.split("```").next().unwrap();
            for line in block.lines().filter(|l| l.starts_with("curl ")) {
                let (command, comment) = line
                    .split_once("   #")
                    .map_or((line, ""), |(c, rest)| (c, rest));
                let comment = comment.trim();
                let status = comment
                    .strip_prefix("expect ")
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|s| s.parse().ok());
                let first = comment.strip_prefix("first: ").map(str::to_owned);
                examples.push(CurlExample {
                    command: command.trim().to_owned(),
                    status,
                    first,
                    guarded,
                });
            }
        }
    }
    examples
}

/// Seeds the demo data's first companies (the same seed as `serve --demo`), so the README's ids
/// exist, and refreshes the views.
async fn seed_demo_companies(pool: &sqlx::PgPool) {
    prospect_api::seed::seed(
        pool,
        &prospect_api::seed::SeedOptions {
            companies: 300,
            prospects_per_company: 10,
            seed: 42,
            replace: true,
        },
        &prospect_api::progress::Progress::hidden("seed"),
    )
    .await
    .unwrap();
    prospect_api::refresh::refresh_all(
        pool,
        prospect_api::refresh::RefreshTrigger::Cli,
        &crate::helpers::quick_refresh_settings(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn every_curl_example_in_the_readme_works_against_a_live_server() {
    let open =
        spawn_configured_app(|config| config.admin_token = Some(ADMIN_TOKEN.parse().unwrap()))
            .await;
    seed_demo_companies(&open.db.pool).await;
    // The "Access control" examples: the example policy of the compose file, a frontend JWT and an
    // analyst key.
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/access-policy.toml");
    let guarded =
        crate::access_support::spawn_guarded(&std::fs::read_to_string(policy).unwrap(), |_| {})
            .await;
    seed_demo_companies(&guarded.db.pool).await;
    let jwt = crate::access_support::token("frontend");
    let api_key = prospect_api::access::keys::create(&guarded.db.pool, "readme", "analyst", None)
        .await
        .unwrap()
        .key;

    let examples = readme_curl_examples();
    assert!(
        examples.len() >= 20,
        "only {} curl examples found",
        examples.len()
    );
    assert!(
        examples.iter().filter(|e| e.guarded).count() >= 6,
        "the access examples"
    );
    for CurlExample {
        command: example,
        status: expected,
        first,
        guarded: in_access_section,
    } in examples
    {
        let address = if in_access_section {
            &guarded.address
        } else {
            &open.address
        };
        let command = example.replace("http://127.0.0.1:8080", address);
        // The server runs on this test's runtime: run curl on a blocking thread, not on it.
        let script = format!("{command} -w '\\n%{{http_code}}'");
        let (jwt, api_key) = (jwt.clone(), api_key.clone());
        let output = tokio::task::spawn_blocking(move || {
            // In a scratch folder: an example may write a file (`-o software.csv`).
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(std::env::temp_dir())
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                .env("JWT", jwt)
                .env("API_KEY", api_key)
                .output()
                .expect("sh runs")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{example}: curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let status: u16 = stdout.lines().last().unwrap().parse().unwrap();
        match expected {
            Some(expected) => assert_eq!(status, expected, "{example}\n{stdout}"),
            None => assert!(
                (200..300).contains(&status) || status == 304,
                "{example} answered {status}\n{stdout}"
            ),
        }
        if let Some(first) = first {
            let body = stdout.rsplit_once('\n').map_or("", |(body, _)| body);
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["data"][0]["full_name"], first.as_str(), "{example}");
        }
    }
}
