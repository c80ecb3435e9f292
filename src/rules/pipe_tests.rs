//! PF-DOWNLOAD-SHELL by the pipe against a hostile workload: a flood of pipes before the
//! download, filters between the downloader and the shell, and their benign twins.

use super::detect_tests::{ancestor, fired, managed, process};
use super::pipes::PIPES_MAX;
use crate::model::{ProcessRecord, Record};

const SEC: u64 = 1_000_000_000;

/// A process of a script file's pipeline (its command lines say nothing): exec'd, or a
/// fork of the script's shell, with its stdin and stdout pipes.
pub(super) fn side(
    pid: u32,
    comm: &str,
    forked: bool,
    stdin: Option<u64>,
    stdout: Option<u64>,
) -> Record {
    let script = ancestor(
        500,
        5000,
        "sh",
        Some("/usr/bin/dash"),
        &["sh", "/home/u/setup.sh"],
    );
    Record::Process(ProcessRecord {
        forked_no_exec: forked,
        stdin_pipe: stdin,
        stdout_pipe: stdout,
        ancestors: vec![script],
        // A fork runs the script's shell (what proc.fork_of_parent sees).
        ..match forked {
            true => process(
                pid,
                "sh",
                Some("/usr/bin/dash"),
                &["sh", "/home/u/setup.sh"],
            ),
            false => process(pid, comm, Some(&format!("/usr/bin/{comm}")), &[comm]),
        }
    })
}

fn download_shells(records: &[Record]) -> usize {
    let out = fired(&mut managed(), records, SEC);
    out.iter().filter(|r| *r == "PF-DOWNLOAD-SHELL").count()
}

/// A workload that shows as many pipes as the engine keeps, then its `curl | sh`: the
/// flood costs the oldest pipes (counted), not the download. Before, the table was cleared
/// when a new pipe arrived at the bound — here the shell's own stdout pipe, arriving after
/// curl's, wiped curl's end and the pipeline went unseen.
#[test]
fn a_flood_of_pipes_before_a_download_into_a_shell_forgets_the_oldest_not_the_download() {
    let mut engine = managed();
    let flood = (0..PIPES_MAX as u64 - 1)
        .map(|i| side(10_000 + i as u32, "yes", false, None, Some(1_000_000 + i)));
    for record in flood {
        assert!(fired(&mut engine, &[record], SEC).is_empty());
    }
    assert_eq!(engine.pipes_evicted(), 0);
    let pipeline = [
        side(501, "curl", false, None, Some(9)),
        side(502, "sh", false, Some(9), Some(10)),
    ];
    let out = fired(&mut engine, &pipeline, SEC);
    assert!(out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"), "{out:?}");
    assert!(
        engine.pipes_evicted() >= 1,
        "the flood's oldest pipe is counted"
    );
    // Then the flood again, past the bound many times over: still bounded, still seen.
    for i in 0..2 * PIPES_MAX as u64 {
        fired(
            &mut engine,
            &[side(90_000, "yes", false, None, Some(5_000_000 + i))],
            SEC,
        );
    }
    assert!(engine.pipes_evicted() >= 2 * PIPES_MAX as u64);
    let later = [
        side(511, "wget", false, None, Some(19)),
        side(512, "bash", false, Some(19), Some(20)),
    ];
    let out = fired(&mut engine, &later, SEC);
    assert!(out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"), "{out:?}");
}

/// Filters between the download and the shell, in every order of the execs; the fed
/// shell's inner commands inherit its stdin and stay in its incident.
#[test]
fn a_download_through_filters_into_a_shell_is_seen_in_either_order() {
    // curl | gunzip | base64 -d | sh
    let curl = side(501, "curl", false, None, Some(9));
    let gunzip = side(502, "gunzip", false, Some(9), Some(10));
    let base64 = side(503, "base64", false, Some(10), Some(11));
    let sh = side(504, "sh", false, Some(11), None);
    for order in [
        [&curl, &gunzip, &base64, &sh],
        [&sh, &base64, &gunzip, &curl],
        [&base64, &sh, &curl, &gunzip],
        [&gunzip, &curl, &sh, &base64],
    ] {
        let records: Vec<Record> = order.into_iter().cloned().collect();
        assert_eq!(download_shells(&records), 1, "{records:?}");
    }
    // `{ sleep 1; curl …; } | sh`: the first exec'd writer is sleep, curl still feeds it.
    let sleep_first = [
        side(511, "sh", true, None, Some(19)),
        side(512, "sleep", false, None, Some(19)),
        side(513, "sh", false, Some(19), None),
        side(514, "curl", false, None, Some(19)),
    ];
    assert_eq!(download_shells(&sleep_first), 1);
    // A `while read` subshell (a fork, never exec'd) passes the download on.
    let while_read = [
        side(521, "wget", false, None, Some(29)),
        side(522, "sh", true, Some(29), Some(30)),
        side(523, "bash", false, Some(30), None),
    ];
    assert_eq!(download_shells(&while_read), 1);
}

/// Benign twins: a download into filters and no shell, a local file through a filter into
/// a shell, and a shell piping its own output into curl (an upload, not a download).
#[test]
fn filters_without_a_download_or_without_a_shell_stay_silent() {
    let silent = [
        // curl | grep x | wc -l
        vec![
            side(501, "curl", false, None, Some(9)),
            side(502, "grep", false, Some(9), Some(10)),
            side(503, "wc", false, Some(10), None),
        ],
        // cat file | base64 -d | sh
        vec![
            side(511, "cat", false, None, Some(19)),
            side(512, "base64", false, Some(19), Some(20)),
            side(513, "sh", false, Some(20), None),
        ],
        // sh report.sh | curl --data-binary @- URL
        vec![
            side(521, "sh", false, None, Some(29)),
            side(522, "curl", false, Some(29), None),
        ],
        // `curl | while read l; do echo "$l"; done`: the loop is a fork of the script's
        // shell, no shell exec'd to run what was downloaded.
        vec![
            side(531, "curl", false, None, Some(39)),
            side(532, "sh", true, Some(39), None),
        ],
    ];
    for records in silent {
        assert_eq!(download_shells(&records), 0, "{records:?}");
    }
}

/// `curl | base64 -d | sh` where the pipeline also starts a few short filters reading
/// curl's pipe (`sleep 0 | true` inside the reading group) and writing the shell's
/// (`echo | sleep 0` inside base64's group), all before curl and sh exec: the filters push
/// base64's links out of the pipes' link lists, and when curl's name and sh's name arrive
/// they have no path to each other. Before, 16 processes hid the pipeline from both sides.
#[test]
fn short_filters_on_both_pipes_do_not_cut_a_download_off_from_its_shell() {
    let mut records = vec![side(502, "base64", false, Some(9), Some(10))];
    for i in 0..16 {
        // Reads curl's pipe, writes its own.
        records.push(side(
            600 + i,
            "sleep",
            false,
            Some(9),
            Some(1_000 + u64::from(i)),
        ));
        // Reads its own pipe, writes the shell's.
        records.push(side(
            700 + i,
            "sleep",
            false,
            Some(2_000 + u64::from(i)),
            Some(10),
        ));
    }
    records.push(side(501, "curl", false, None, Some(9)));
    records.push(side(503, "sh", false, Some(10), None));
    assert_eq!(download_shells(&records), 1);
}

/// Filters among a few hundred pipes, every pair once: the links stay bounded (the oldest
/// pipes go, counted) though the pipes alone are far below their bound.
#[test]
fn a_flood_of_filters_among_few_pipes_is_bounded_and_counted() {
    let mut engine = managed();
    for (i, (inp, out)) in (0..400u64)
        .flat_map(|a| (0..400u64).map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .enumerate()
    {
        let filter = side(
            20_000 + (i % 1000) as u32,
            "cat",
            false,
            Some(inp),
            Some(out),
        );
        fired(&mut engine, &[filter], SEC);
    }
    assert!(engine.pipes_evicted() > 0);
}

/// `{ sleep 1; exec curl …; } | cat | … (12 cats) … | { sleep 1; exec sh; }`: the filters
/// are seen before the download and the shell. Before, a name was carried at most 8
/// filters away, from either end: 9 cats hid the pipeline.
#[test]
fn a_download_through_many_filters_into_a_shell_is_seen() {
    let n = 12u32;
    let mut records: Vec<Record> = (0..n)
        .map(|i| {
            let inp = 100 + u64::from(i);
            side(600 + i, "cat", false, Some(inp), Some(inp + 1))
        })
        .collect();
    records.push(side(501, "curl", false, None, Some(100)));
    records.push(side(502, "sh", false, Some(100 + u64::from(n)), None));
    assert_eq!(download_shells(&records), 1);
}

/// A pipeline side run with its own command line (`python3 -c …`).
fn side_argv(pid: u32, argv: &[&str], stdin: Option<u64>, stdout: Option<u64>) -> Record {
    let mut r = side(pid, argv[0], false, stdin, stdout);
    if let Record::Process(p) = &mut r {
        p.argv = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    }
    r
}

/// A download read as data by an interpreter whose program is on its command line — the
/// JSON a CI job parses (`curl … | python3 -c 'import json,sys; …'`, `| python3 -m
/// json.tool`, `| awk -F: …`, `| perl -ne …`, `| node -e …`), also through a filter — is
/// not a download into an interpreter, in either order of the execs; the same
/// interpreters reading their program from the download still are. Before, every
/// interpreter on a downloader's pipe fired, whatever its command line.
#[test]
fn an_interpreter_with_its_program_on_its_command_line_reads_a_download_as_data() {
    let program = "import json,sys; print(json.load(sys.stdin)['tag_name'])";
    let readers: [&[&str]; 6] = [
        &["python3", "-c", program],
        &["python3", "-m", "json.tool"],
        &["awk", "-F:", "{print $2}"],
        &["perl", "-ne", "print if /tag/"],
        &["node", "-e", "let d='';process.stdin.on('data',c=>d+=c)"],
        &["python3", "/usr/local/bin/parse.py"],
    ];
    for argv in readers {
        let curl = side(501, "curl", false, None, Some(9));
        let reader = side_argv(502, argv, Some(9), None);
        for order in [[&curl, &reader], [&reader, &curl]] {
            let records: Vec<Record> = order.into_iter().cloned().collect();
            assert_eq!(download_shells(&records), 0, "{argv:?}: {records:?}");
        }
        let gunzip = side(512, "gunzip", false, Some(19), Some(20));
        let filtered = [
            side(511, "curl", false, None, Some(19)),
            side_argv(513, argv, Some(20), None),
            gunzip,
        ];
        assert_eq!(download_shells(&filtered), 0, "{argv:?} behind a filter");
    }
    let fed: [&[&str]; 6] = [
        &["python3"],
        &["python3", "-"],
        &["python3", "-u", "/dev/stdin"],
        &["python3", "-c", "import sys; exec(sys.stdin.read())"],
        &["perl", "-e", "eval join '', <STDIN>"],
        &["awk", "{ system($0) }"],
    ];
    for argv in fed {
        let curl = side(501, "curl", false, None, Some(9));
        let reader = side_argv(502, argv, Some(9), None);
        for order in [[&curl, &reader], [&reader, &curl]] {
            let records: Vec<Record> = order.into_iter().cloned().collect();
            assert_eq!(download_shells(&records), 1, "{argv:?}: {records:?}");
        }
    }
}

/// A shell read while exiting (its command line and exe already gone: a pyenv shim's
/// `$(…)` subshell) on a downloader's pipe cannot be told from a fork of its parent: it
/// is judged on neither side. Before, it fired as a download into a shell.
#[test]
fn a_shell_read_while_exiting_on_a_downloads_pipe_is_not_judged() {
    let gone = |pid: u32, stdin: Option<u64>| {
        let mut r = side_argv(pid, &["bash"], stdin, None);
        if let Record::Process(p) = &mut r {
            p.argv.clear();
            p.exe = None;
            p.exe_unavailable = crate::model::Unavailable::ProcessGone;
        }
        r
    };
    let curl = side(501, "curl", false, None, Some(9));
    for order in [
        [curl.clone(), gone(502, Some(9))],
        [gone(502, Some(9)), curl],
    ] {
        assert_eq!(download_shells(&order), 0, "{order:?}");
    }
}
