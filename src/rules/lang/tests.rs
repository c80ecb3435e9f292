use super::parse::{compile_inner, glob_to_regex, Bounds};
use super::*;
use crate::model::{
    Direction, FlowPhase, FlowRecord, ProcessPhase, ProcessRecord, Protocol, RecordKind, Scope,
};
use proptest::prelude::*;

fn tree(src: &str, kind: RecordKind) -> Node {
    let terms = std::cell::Cell::new(0);
    let bounds = Bounds {
        nesting: 0,
        macro_depth: 0,
        terms: &terms,
    };
    compile_inner(src, kind, &Defs::default(), false, bounds).expect("compiles")
}

#[test]
fn nesting_past_the_limit_is_an_error_with_its_position_not_a_stack_overflow() {
    let defs = Defs::default();
    // 3,000 levels: on the 2 MiB stack of a test (or detection) thread the parser
    // overflowed before the limit.
    let parens = format!("{}proc.pid == 1{}", "(".repeat(3000), ")".repeat(3000));
    let e = compile(&parens, RecordKind::Process, &defs).expect_err("too deep");
    assert_eq!((e.line, e.col), (1, MAX_NESTING + 1), "{e}");
    assert!(e.msg.contains("nested deeper than 64"), "{e}");
    let nots = format!("{}proc.pid == 1", "not ".repeat(3000));
    let e = compile(&nots, RecordKind::Process, &defs).expect_err("too deep");
    assert_eq!((e.line, e.col), (1, 4 * MAX_NESTING + 1), "{e}");
    let anys = format!(
        "{}a.pid == 1{}",
        "any(proc.ancestors, ".repeat(3000),
        ")".repeat(3000)
    );
    assert!(compile(&anys, RecordKind::Process, &defs).is_err());
    // At the limit it compiles and evaluates.
    let deepest = format!(
        "{}proc.pid == 1{}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    compile(&deepest, RecordKind::Process, &defs).expect("at the limit");
}

#[test]
fn macros_count_toward_nesting_and_their_expansion_is_bounded() {
    // Macros nested through parentheses: each level adds its own and the macro's.
    let mut defs = Defs::default();
    defs.macros.insert("m0".into(), "proc.pid == 1".into());
    for i in 1..=15 {
        defs.macros.insert(
            format!("m{i}"),
            format!("{}m{}{}", "(".repeat(8), i - 1, ")".repeat(8)),
        );
    }
    let e = compile("m15", RecordKind::Process, &defs).expect_err("too deep");
    assert!(e.msg.contains("nested deeper"), "{e}");
    // Each macro uses the one below four times: 4^n terms. 4^15 (a billion) is refused
    // after the first hundred thousand.
    let mut defs = Defs::default();
    defs.macros.insert("e0".into(), "proc.pid == 1".into());
    for i in 1..=15 {
        let below = format!("e{}", i - 1);
        defs.macros
            .insert(format!("e{i}"), [below.as_str(); 4].join(" or "));
    }
    let e = compile("e15", RecordKind::Process, &defs).expect_err("expands too far");
    assert!(e.msg.contains("more than 100000 terms"), "{e}");
    compile("e5", RecordKind::Process, &defs).expect("4^5 terms compile");
    // A long list used many times counts its items each time.
    let mut defs = Defs::default();
    defs.lists.insert(
        "big".into(),
        (0..20_000)
            .map(|i| serde_yaml_ng::Value::String(format!("n{i}")))
            .collect(),
    );
    defs.macros
        .insert("inbig".into(), "proc.comm in (big)".into());
    compile("inbig or inbig", RecordKind::Process, &defs).expect("40,000 items");
    let e = compile(
        "inbig or inbig or inbig or inbig or inbig or inbig",
        RecordKind::Process,
        &defs,
    )
    .expect_err("120,000 items");
    assert!(e.msg.contains("terms"), "{e}");
}

/// Every combination of a flow's enum values, with and without an owner process
/// (without one, `proc.phase` is absent), against conditions mixing folded enum tests
/// with ones that stay in the tree: the folded condition agrees with the plain tree.
#[test]
fn folded_enum_tests_agree_with_the_tree() {
    let conditions = [
        r#"fd.direction == "OUTBOUND" and fd.scope != "LOCAL""#,
        r#"fd.direction in (INBOUND, OUTBOUND) and fd.direction != "INBOUND""#,
        r#"fd.protocol == "TCP" and (fd.phase != "END" and fd.scope == "NORTH_SOUTH")"#,
        r#"not fd.direction == "OUTBOUND" and fd.phase == "START""#,
        r#"fd.direction == "OUTBOUND" and fd.direction == "INBOUND""#,
        r#"fd.phase == "START" or fd.scope == "LOCAL""#,
        r#"proc.phase != "EXIT" and fd.direction == "OUTBOUND" and fd.rport == 443"#,
        r#"fd.rport != 22 and proc.phase == "START""#,
        r#"fd.scope in (UNSPECIFIED, LOCAL, EAST_WEST, NORTH_SOUTH)"#,
    ];
    let owner = crate::fixtures::process(7, b"curl");
    let mut checked = 0;
    for src in conditions {
        let plain = tree(src, RecordKind::Flow);
        let folded = Condition::new(plain.clone());
        for &direction in Direction::VARIANTS {
            for &scope in Scope::VARIANTS {
                for &protocol in Protocol::VARIANTS {
                    for &phase in FlowPhase::VARIANTS {
                        for process in [None, Some(&owner)] {
                            let flow = FlowRecord {
                                direction,
                                scope,
                                protocol,
                                phase,
                                ..crate::fixtures::flow(1)
                            };
                            let c = Ctx {
                                process,
                                flow: Some(&flow),
                                listener: None,
                                ancestor: None,
                                audit: None,
                                source: None,
                                cmdline: None,
                            };
                            assert_eq!(
                                folded.holds(Facts::of(&c), &c),
                                plain.eval(&c),
                                "{src} on {direction:?} {scope:?} {protocol:?} {phase:?} owner={}",
                                process.is_some()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, conditions.len() * 4 * 4 * 3 * 3 * 2);
    // The folding took the enum tests out of the tree.
    let c = Condition::new(tree(
        r#"fd.direction == "OUTBOUND" and fd.scope != "LOCAL""#,
        RecordKind::Flow,
    ));
    assert!(matches!(c.rest, Node::Const(true)), "{:?}", c.rest);
}

#[test]
fn process_phase_folds_and_absent_never_matches() {
    let c = Condition::new(tree(r#"proc.phase != "EXIT""#, RecordKind::Process));
    for &phase in ProcessPhase::VARIANTS {
        let p = ProcessRecord {
            phase,
            ..crate::fixtures::process(1, b"sh")
        };
        let ctx = Ctx {
            process: Some(&p),
            flow: None,
            listener: None,
            ancestor: None,
            audit: None,
            source: None,
            cmdline: None,
        };
        assert_eq!(c.holds(Facts::of(&ctx), &ctx), phase != ProcessPhase::Exit);
    }
    let nothing = Ctx {
        process: None,
        flow: None,
        listener: None,
        ancestor: None,
        audit: None,
        source: None,
        cmdline: None,
    };
    assert!(!c.holds(Facts::of(&nothing), &nothing));
}

#[test]
fn a_trailing_star_glob_is_a_prefix_test_that_matches_like_the_regex() {
    let exe = |e: &[u8]| ProcessRecord {
        exe: Some(e.to_vec()),
        ..crate::fixtures::process(1, b"x")
    };
    for glob in ["/*", "/tmp/*", "*", "/usr/bin/ba*", "a.b*"] {
        let fast = tree(&format!("proc.exe glob {glob:?}"), RecordKind::Process);
        assert!(matches!(fast, Node::Prefix(..)), "{glob}: {fast:?}");
        let slow = Node::Regex(
            Field::Exe,
            regex::bytes::Regex::new(&glob_to_regex(glob)).expect("regex"),
        );
        for value in [
            &b"/usr/bin/bash"[..],
            b"/tmp/x",
            b"/tmp",
            b"",
            b"relative",
            b"a.bc",
            b"axbc",
            b"/x\n\xff",
        ] {
            let p = exe(value);
            let c = Ctx {
                process: Some(&p),
                flow: None,
                listener: None,
                ancestor: None,
                audit: None,
                source: None,
                cmdline: None,
            };
            assert_eq!(fast.eval(&c), slow.eval(&c), "{glob} on {value:?}");
        }
    }
    let inner = tree(r#"proc.exe glob "/t*p/*""#, RecordKind::Process);
    assert!(matches!(inner, Node::Regex(..)), "{inner:?}");
}

proptest! {
    #[test]
    fn byte_sets_match_exactly_their_items(
        items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..12),
        probe in proptest::collection::vec(any::<u8>(), 0..80),
        pick in any::<prop::sample::Index>(),
    ) {
        let set = ByteSet::new(items.clone());
        prop_assert_eq!(set.contains(&probe), items.contains(&probe));
        if !items.is_empty() {
            prop_assert!(set.contains(&items[pick.index(items.len())]));
        }
    }

    /// Few letters, so items share heads and lengths and differ only past byte 8
    /// (or by zero padding), where the inline comparison alone would be fooled.
    #[test]
    fn byte_sets_tell_items_with_a_shared_head_apart(
        items in proptest::collection::vec(
            proptest::collection::vec(prop::sample::select(vec![0u8, b'a']), 0..14), 0..12),
        probe in proptest::collection::vec(prop::sample::select(vec![0u8, b'a']), 0..14),
    ) {
        let set = ByteSet::new(items.clone());
        prop_assert_eq!(set.contains(&probe), items.contains(&probe));
    }
}
