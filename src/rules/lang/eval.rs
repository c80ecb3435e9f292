//! The compiled tree and its evaluation, with the top-level enum tests folded into one
//! mask over a record's [`Facts`].

use std::net::IpAddr;

use ipnet::IpNet;

use super::super::ka::{self, KaField};
use super::fields::{enum_names, get, get_ordinal, ka_val, Ctx, Field, Val};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The compiled, typed evaluation tree.
#[derive(Debug, Clone)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Const(bool),
    BoolField(Field),
    CmpInt(Field, CmpOp, i64),
    CmpBytes(Field, bool, Vec<u8>),
    InBytes(Field, ByteSet),
    /// An enum field holds one of the variants whose ordinal bits are set.
    EnumIn(Field, u8),
    InInt(Field, Vec<i64>),
    InIp(Field, Vec<IpAddr>),
    Cidr(Field, Vec<IpNet>),
    Prefix(Field, Vec<Vec<u8>>),
    Contains(Field, Vec<u8>),
    Regex(Field, regex::bytes::Regex),
    AnyAncestor(Box<Node>),
}

/// Strings to match whole, checked by length first: most values miss on length alone,
/// with no byte compared. Each item's length and first 8 bytes sit inline, so names of up
/// to 8 bytes (most process names) are compared without following a pointer.
#[derive(Debug, Clone)]
pub struct ByteSet {
    heads: Vec<(usize, u64)>,
    items: Vec<Vec<u8>>,
    lengths: u64,
}

pub(super) fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The first 8 bytes, zero-padded (the length tells a short value from a padded one).
pub(super) fn head(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = b.len().min(8);
    word[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(word)
}

impl ByteSet {
    pub(super) fn new(items: Vec<Vec<u8>>) -> ByteSet {
        let lengths = items.iter().fold(0, |m, k| m | length_bit(k.len()));
        let heads = items.iter().map(|k| (k.len(), head(k))).collect();
        ByteSet {
            heads,
            items,
            lengths,
        }
    }

    pub(super) fn contains(&self, v: &[u8]) -> bool {
        if self.lengths & length_bit(v.len()) == 0 {
            return false;
        }
        let wanted = (v.len(), head(v));
        self.heads
            .iter()
            .zip(&self.items)
            .any(|(h, k)| *h == wanted && (v.len() <= 8 || k.as_slice() == v))
    }
}

/// The enum fields whose values [`Facts`] holds.
pub(super) const ENUM_FIELDS: [Field; 7] = [
    Field::Phase,
    Field::Direction,
    Field::Scope,
    Field::Protocol,
    Field::FlowPhase,
    Field::Ka(KaField::Stage),
    Field::Ka(KaField::Outcome),
];

/// Where an enum field's bits sit in [`Facts`] and how many there are: one per value and
/// one for "absent".
pub(super) fn enum_bits(f: Field) -> Option<(u32, u32)> {
    let mut offset = 0;
    for e in ENUM_FIELDS {
        let width = enum_names(e)?.len() as u32 + 1;
        if e == f {
            return Some((offset, width));
        }
        offset += width;
    }
    None
}

/// A record's enum fields, one-hot: for each field exactly one bit is set, at its value's
/// ordinal or at "absent". Read once per record and shared by every rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts(u32);

impl Facts {
    /// Lays the fields out as [`enum_bits`] does, in one pass.
    pub fn of(c: &Ctx<'_>) -> Facts {
        let (mut bits, mut offset) = (0, 0);
        for f in ENUM_FIELDS {
            let absent = enum_names(f).map_or(0, |names| names.len() as u32);
            let at = get_ordinal(f, c).map_or(absent, u32::from);
            bits |= 1 << (offset + at);
            offset += absent + 1;
        }
        Facts(bits)
    }
}

/// A compiled condition. The enum tests of its top-level `and` (the most common tests:
/// direction, scope, phase) are folded into one mask over [`Facts`]: the bits of every
/// value (and of "absent") that a test refuses. As each field has exactly one bit set,
/// all those tests hold when no refused bit is set.
#[derive(Debug, Clone)]
pub struct Condition {
    refused: u32,
    pub(super) rest: Node,
}

impl Condition {
    pub(super) fn new(root: Node) -> Condition {
        let mut conjuncts = Vec::new();
        flatten_and(root, &mut conjuncts);
        let mut refused = 0u32;
        let mut rest = Vec::new();
        for n in conjuncts {
            if let Node::EnumIn(f, accepted) = n {
                if let Some((offset, width)) = enum_bits(f) {
                    let field = ((1u32 << width) - 1) << offset;
                    refused |= field & !(u32::from(accepted) << offset);
                    continue;
                }
            }
            rest.push(n);
        }
        Condition {
            refused,
            rest: match rest.len() {
                0 => Node::Const(true),
                1 => rest.remove(0),
                _ => Node::And(rest),
            },
        }
    }

    /// The names the condition compares a bytes field with (`f in (…)`, `f = "…"`): what
    /// the engine must keep track of for that field.
    pub fn names_compared(&self, f: Field, out: &mut Vec<Vec<u8>>) {
        fn walk(n: &Node, f: Field, out: &mut Vec<Vec<u8>>) {
            match n {
                Node::And(v) | Node::Or(v) => v.iter().for_each(|c| walk(c, f, out)),
                Node::Not(n) | Node::AnyAncestor(n) => walk(n, f, out),
                Node::InBytes(g, set) if *g == f => out.extend(set.items.iter().cloned()),
                Node::CmpBytes(g, true, k) if *g == f => out.push(k.clone()),
                _ => {}
            }
        }
        walk(&self.rest, f, out);
    }

    pub fn holds(&self, facts: Facts, c: &Ctx<'_>) -> bool {
        facts.0 & self.refused == 0 && self.rest.eval(c)
    }
}

pub(super) fn flatten_and(n: Node, out: &mut Vec<Node>) {
    match n {
        Node::And(v) => v.into_iter().for_each(|c| flatten_and(c, out)),
        other => out.push(other),
    }
}

/// Whether `pred` holds for the field's value or, for a list field, for one of its items.
#[inline(always)]
pub(super) fn test<'a>(f: Field, c: &Ctx<'a>, mut pred: impl FnMut(Val<'a>) -> bool) -> bool {
    if let (Field::Ka(k), Some(a)) = (f, c.audit) {
        if ka::is_list(k) {
            return ka::each(k, a, &mut |v| pred(ka_val(v)));
        }
    }
    // A pipe's other side is a list: its first end and the names carried through filters.
    if let (Field::StdinWriterComm | Field::StdoutReaderComm, Some(p), Some(s)) =
        (f, c.process, c.source)
    {
        let mut names = match f {
            Field::StdinWriterComm => s.stdin_writers(p),
            _ => s.stdout_readers(p),
        };
        return names.any(|n| pred(Val::Bytes(std::borrow::Cow::Borrowed(n))));
    }
    pred(get(f, c))
}

impl Node {
    pub fn eval(&self, c: &Ctx<'_>) -> bool {
        match self {
            Node::And(v) => v.iter().all(|n| n.eval(c)),
            Node::Or(v) => v.iter().any(|n| n.eval(c)),
            Node::Not(n) => !n.eval(c),
            Node::Const(b) => *b,
            Node::BoolField(f) => test(*f, c, |v| matches!(v, Val::Bool(true))),
            Node::CmpInt(f, op, k) => test(*f, c, |v| match v {
                Val::Int(v) => match op {
                    CmpOp::Eq => v == *k,
                    CmpOp::Ne => v != *k,
                    CmpOp::Lt => v < *k,
                    CmpOp::Le => v <= *k,
                    CmpOp::Gt => v > *k,
                    CmpOp::Ge => v >= *k,
                },
                _ => false,
            }),
            Node::CmpBytes(f, eq, k) => test(*f, c, |v| match v {
                Val::Bytes(v) => (v.as_ref() == k.as_slice()) == *eq,
                _ => false,
            }),
            Node::InBytes(f, ks) => test(*f, c, |v| matches!(v, Val::Bytes(v) if ks.contains(&v))),
            Node::EnumIn(f, mask) => get_ordinal(*f, c).is_some_and(|o| mask & (1 << o) != 0),
            Node::InInt(f, ks) => test(*f, c, |v| matches!(v, Val::Int(v) if ks.contains(&v))),
            Node::InIp(f, ks) => test(*f, c, |v| matches!(v, Val::Ip(v) if ks.contains(&v))),
            Node::Cidr(f, ks) => test(
                *f,
                c,
                |v| matches!(v, Val::Ip(v) if ks.iter().any(|n| n.contains(&v))),
            ),
            Node::Prefix(f, ks) => test(
                *f,
                c,
                |v| matches!(v, Val::Bytes(v) if ks.iter().any(|k| v.starts_with(k))),
            ),
            Node::Contains(f, k) => test(
                *f,
                c,
                |v| matches!(v, Val::Bytes(v) if v.windows(k.len().max(1)).any(|w| w == k.as_slice())),
            ),
            Node::Regex(f, r) => test(*f, c, |v| matches!(v, Val::Bytes(v) if r.is_match(&v))),
            Node::AnyAncestor(n) => c.process.is_some_and(|p| {
                p.ancestors.iter().any(|a| {
                    n.eval(&Ctx {
                        ancestor: Some(a),
                        ..*c
                    })
                })
            }),
        }
    }
}
