//! A download piped into a shell, seen by the pipe itself (fd access): the pipelines whose
//! command lines say nothing — run from a script file, typed into an interactive shell —
//! fire, also with a filter or a group between the download and the shell; a download
//! piped into grep (and on into wc), and a local file piped into a shell, do not.

use std::process::{Command, Stdio};

use procflow::model::Record;

use super::{alerts, download_twins, family, fired_on, observe, scratch_dir, serve_dir, sh_file};
use crate::util::Kids;

#[test]
fn a_download_piped_into_a_shell_from_a_script_or_a_terminal_fires_by_its_pipe() {
    let dir = scratch_dir();
    // Downloads of a second or so (serve_dir holds each body back): a downloader that
    // lives a few ms can end before the collector reads its exec, and the pipe then names
    // no downloader (a polling limit, in the rule's description), which is not what this
    // test is about.
    let padding = format!("# {}\n", "x".repeat(2000));
    std::fs::write(dir.path().join("x.sh"), format!("{padding}sleep 2\n")).expect("payload");
    let (_server, port) = serve_dir(dir.path());
    let url = format!("http://127.0.0.1:{port}/x.sh");
    let script = |name: &str, body: String| sh_file(dir.path(), name, &body);
    let (records, kids) = observe(&[], || {
        let [grep, local] = download_twins(dir.path(), &url);
        let typed = Command::new("script")
            .args([
                "-qc",
                &format!("printf 'curl -fsS --limit-rate 2k {url} | sh\\nexit\\n' | bash -i"),
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("script");
        Kids(vec![
            script(
                "attack.sh",
                format!("wget -qO- --limit-rate=2k {url} | bash\n"),
            ),
            typed,
            grep,
            local,
            // One step between the download and the shell: a filter, or each side run
            // as a group (whose forked subshells are the pipe's first ends).
            script(
                "filter.sh",
                format!("curl -fsS --limit-rate 2k {url} | cat | sh\n"),
            ),
            script(
                "group.sh",
                format!("{{ curl -fsS --limit-rate 2k {url}; :; }} | {{ :; sh; }}\n"),
            ),
            script(
                "grep2.sh",
                format!("curl -fsS {url} | grep sleep | wc -l; sleep 2\n"),
            ),
        ])
    });
    let all = alerts(&records);
    for (i, what) in [
        (0, "a script's wget | bash"),
        (1, "a typed curl | sh"),
        (4, "curl | cat | sh"),
        (5, "{ curl; :; } | { :; sh; }"),
    ] {
        let attack = family(&[kids.0[i].id()], &records);
        assert!(
            fired_on(&all, "PF-DOWNLOAD-SHELL", &attack),
            "{what}: {all:?}"
        );
        let alerts_here = all
            .iter()
            .filter(|(r, p, _)| r == "PF-DOWNLOAD-SHELL" && p.is_some_and(|p| attack.contains(&p)))
            .count();
        assert_eq!(alerts_here, 1, "{what}: one pipeline, one alert: {all:?}");
    }
    for (i, what) in [(2, "curl | grep"), (3, "cat | sh"), (6, "curl | grep | wc")] {
        let benign = family(&[kids.0[i].id()], &records);
        assert!(
            !fired_on(&all, "PF-DOWNLOAD-SHELL", &benign),
            "{what}: {all:?}"
        );
    }
}

/// A CI job's download read as data by an interpreter given its program on its command
/// line — `curl … | python3 -c 'import json,sys; …'`, `| python3 -m json.tool`,
/// `| awk '{print $1}'` — from a script file (the pipe alone tells) and from `sh -c` (the
/// parent's command line tells too): no download into a shell, with fd access or without.
/// Before, each raised PF-DOWNLOAD-SHELL; the same script piping into `python3 -` still does.
#[test]
fn a_download_parsed_by_an_interpreter_one_liner_is_not_a_download_into_a_shell() {
    let dir = scratch_dir();
    std::fs::write(dir.path().join("x.json"), "{\"tag_name\": \"v1\"}\n").expect("json");
    std::fs::write(dir.path().join("x.py"), "import time; time.sleep(2)\n").expect("py");
    let (_server, port) = serve_dir(dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let parse = "import json,sys; print(json.load(sys.stdin)['tag_name'])";
    for prefix in [&[][..], &crate::util::UNPRIVILEGED[..]] {
        let (records, kids) = observe(prefix, || {
            Kids(vec![
                sh_file(
                    dir.path(),
                    "parse.sh",
                    &format!(
                        "curl -fsS --limit-rate 2k {url}/x.json | python3 -c \"{parse}\"\ncurl -fsS --limit-rate 2k {url}/x.json | python3 -m json.tool\ncurl -fsS --limit-rate 2k {url}/x.json | awk '{{print $1}}'\nsleep 1\n"
                    ),
                ),
                Command::new("sh")
                    .args([
                        "-c",
                        &format!("curl -fsS --limit-rate 2k {url}/x.json | python3 -c \"{parse}\"; sleep 1"),
                    ])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("sh"),
                sh_file(
                    dir.path(),
                    "attack.sh",
                    &format!("curl -fsS --limit-rate 2k {url}/x.py | /usr/bin/python3 -\n"),
                ),
            ])
        });
        let all = alerts(&records);
        let benign = family(&[kids.0[0].id(), kids.0[1].id()], &records);
        let parsers = records
            .iter()
            .filter(|r| matches!(r, Record::Process(p) if benign.contains(&p.pid) && (p.comm.starts_with(b"python") || p.comm == b"awk")))
            .count();
        assert!(parsers > 0, "{prefix:?}: no parser seen");
        for r in &records {
            if let Record::Process(p) = r {
                if benign.contains(&p.pid) && all.iter().any(|(_, a, _)| *a == Some(p.pid)) {
                    eprintln!(
                        "benign alerted: {}",
                        serde_json::to_string(p).unwrap_or_default()
                    );
                }
            }
        }
        for rule in ["PF-DOWNLOAD-SHELL", "PF-DOWNLOAD-SHELL-SIBLINGS"] {
            assert!(!fired_on(&all, rule, &benign), "{prefix:?}: {all:?}");
        }
        if prefix.is_empty() {
            let attack = family(&[kids.0[2].id()], &records);
            assert!(
                fired_on(&all, "PF-DOWNLOAD-SHELL", &attack),
                "{prefix:?}: {all:?}"
            );
        }
    }
}
