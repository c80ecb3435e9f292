//! The condition language: hand-written lexer, recursive-descent parser with
//! positions, compiled once into a typed tree whose field accessors are resolved
//! per record kind at load time.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | "any" "(" "proc.ancestors" "," expr ")" | pred | MACRO
//! pred    := FIELD (op literal | "in" list | "glob" STR | "regex" STR | "startswith" STR
//!            | "contains" STR | "in_cidr" list) | FIELD (bool field)
//! list    := "(" literal ("," literal)* ")" | LISTNAME
//! ```

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::ka::{self, KaField, KaType, KaValue};
use crate::model::{Ancestor, AuditRecord, FlowRecord, ListenerRecord, ProcessRecord, RecordKind};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

#[derive(Debug, Clone)]
struct Spanned {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Spanned>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, msg: String| ParseError { line, col, msg };
    while i < chars.len() {
        let c = chars[i];
        let (sl, sc) = (line, col);
        let adv = |i: &mut usize, col: &mut usize, n: usize| {
            *i += n;
            *col += n;
        };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            adv(&mut i, &mut col, 1);
            continue;
        }
        let push = |out: &mut Vec<Spanned>, tok| {
            out.push(Spanned {
                tok,
                line: sl,
                col: sc,
            })
        };
        match c {
            '(' => {
                push(&mut out, Tok::LParen);
                adv(&mut i, &mut col, 1);
            }
            ')' => {
                push(&mut out, Tok::RParen);
                adv(&mut i, &mut col, 1);
            }
            ',' => {
                push(&mut out, Tok::Comma);
                adv(&mut i, &mut col, 1);
            }
            '=' | '!' | '<' | '>' => {
                let two = chars.get(i + 1) == Some(&'=');
                let op = match (c, two) {
                    ('=', true) => "==",
                    ('!', true) => "!=",
                    ('<', true) => "<=",
                    ('>', true) => ">=",
                    ('<', false) => "<",
                    ('>', false) => ">",
                    _ => return Err(err(sl, sc, format!("unexpected character {c:?}"))),
                };
                push(&mut out, Tok::Op(op));
                adv(&mut i, &mut col, if two { 2 } else { 1 });
            }
            '"' | '\'' => {
                let q = c;
                adv(&mut i, &mut col, 1);
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(sl, sc, "unterminated string".into())),
                        Some(&ch) if ch == q => {
                            adv(&mut i, &mut col, 1);
                            break;
                        }
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(&e @ ('\\' | '"' | '\'')) => s.push(e),
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                _ => return Err(err(line, col, "bad escape in string".into())),
                            }
                            adv(&mut i, &mut col, 2);
                        }
                        Some('\n') => return Err(err(sl, sc, "newline in string".into())),
                        Some(&ch) => {
                            s.push(ch);
                            adv(&mut i, &mut col, 1);
                        }
                    }
                }
                push(&mut out, Tok::Str(s));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    adv(&mut i, &mut col, 1);
                }
                let s: String = chars[start..i].iter().collect();
                let n = s
                    .parse()
                    .map_err(|_| err(sl, sc, format!("integer {s} out of range")))?;
                push(&mut out, Tok::Int(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                {
                    adv(&mut i, &mut col, 1);
                }
                push(&mut out, Tok::Ident(chars[start..i].iter().collect()));
            }
            _ => return Err(err(sl, sc, format!("unexpected character {c:?}"))),
        }
    }
    Ok(out)
}

/// A field, resolved to an accessor at compile time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    // process (on process records directly; on flows/listeners through the engine's pid cache)
    Pid,
    Ppid,
    Comm,
    Exe,
    ExeName,
    Cmdline,
    Cwd,
    Uid,
    Euid,
    Tty,
    ExeDeleted,
    Preexisting,
    StdioSocket,
    ContainerId,
    AncestorCount,
    Phase,
    RootPid,
    RootComm,
    CommMatchesExe,
    // ancestor inside any(...)
    AComm,
    AExe,
    APid,
    AUid,
    // flow / listener
    RAddr,
    RPort,
    LAddr,
    LPort,
    Direction,
    Scope,
    Protocol,
    BytesSent,
    BytesReceived,
    FlowPhase,
    // audit records (`ka.*`, see `super::ka`)
    Ka(KaField),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Bytes,
    Int,
    Bool,
    Ip,
}

fn resolve(name: &str, kind: RecordKind, in_any: bool) -> Option<(Field, Ty)> {
    use Field::*;
    if name.starts_with("ka.") {
        let (f, ty, _) = ka::resolve(name).filter(|_| kind == RecordKind::Audit)?;
        let ty = match ty {
            KaType::Text | KaType::Enum => Ty::Bytes,
            KaType::Int => Ty::Int,
            KaType::Bool => Ty::Bool,
            KaType::Ip => Ty::Ip,
        };
        return Some((Ka(f), ty));
    }
    let net = matches!(kind, RecordKind::Flow | RecordKind::Listener);
    let f = match name {
        "proc.pid" => (Pid, Ty::Int),
        "proc.ppid" => (Ppid, Ty::Int),
        "proc.comm" | "proc.name" => (Comm, Ty::Bytes),
        "proc.exe" => (Exe, Ty::Bytes),
        "proc.exe_name" => (ExeName, Ty::Bytes),
        "proc.cmdline" => (Cmdline, Ty::Bytes),
        "proc.cwd" => (Cwd, Ty::Bytes),
        "proc.uid" => (Uid, Ty::Int),
        "proc.euid" => (Euid, Ty::Int),
        "proc.tty" => (Tty, Ty::Int),
        "proc.exe_deleted" => (ExeDeleted, Ty::Bool),
        "proc.preexisting" => (Preexisting, Ty::Bool),
        "proc.stdio_is_socket" => (StdioSocket, Ty::Bool),
        "proc.container_id" => (ContainerId, Ty::Bytes),
        "proc.ancestors.count" => (AncestorCount, Ty::Int),
        "proc.phase" => (Phase, Ty::Bytes),
        "proc.root.pid" => (RootPid, Ty::Int),
        "proc.root.comm" => (RootComm, Ty::Bytes),
        "proc.comm_matches_exe" => (CommMatchesExe, Ty::Bool),
        "a.comm" if in_any => (AComm, Ty::Bytes),
        "a.exe" if in_any => (AExe, Ty::Bytes),
        "a.pid" if in_any => (APid, Ty::Int),
        "a.uid" if in_any => (AUid, Ty::Int),
        "fd.rip" | "fd.raddr" if kind == RecordKind::Flow => (RAddr, Ty::Ip),
        "fd.rport" if kind == RecordKind::Flow => (RPort, Ty::Int),
        "fd.lip" | "fd.laddr" if net => (LAddr, Ty::Ip),
        "fd.lport" if net => (LPort, Ty::Int),
        "fd.direction" if kind == RecordKind::Flow => (Direction, Ty::Bytes),
        "fd.scope" if kind == RecordKind::Flow => (Scope, Ty::Bytes),
        "fd.protocol" if net => (Protocol, Ty::Bytes),
        "fd.bytes_sent" if kind == RecordKind::Flow => (BytesSent, Ty::Int),
        "fd.bytes_received" if kind == RecordKind::Flow => (BytesReceived, Ty::Int),
        "fd.phase" if net => (FlowPhase, Ty::Bytes),
        _ => return None,
    };
    Some(f)
}

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

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The first 8 bytes, zero-padded (the length tells a short value from a padded one).
fn head(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = b.len().min(8);
    word[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(word)
}

impl ByteSet {
    fn new(items: Vec<Vec<u8>>) -> ByteSet {
        let lengths = items.iter().fold(0, |m, k| m | length_bit(k.len()));
        let heads = items.iter().map(|k| (k.len(), head(k))).collect();
        ByteSet {
            heads,
            items,
            lengths,
        }
    }

    fn contains(&self, v: &[u8]) -> bool {
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

/// The names an enum field can hold (what its records serialize to), by ordinal.
fn enum_names(f: Field) -> Option<&'static [&'static str]> {
    use crate::model::{Direction, FlowPhase, ProcessPhase, Protocol, Scope};
    Some(match f {
        Field::Phase => ProcessPhase::NAMES,
        Field::Direction => Direction::NAMES,
        Field::Scope => Scope::NAMES,
        Field::Protocol => Protocol::NAMES,
        Field::FlowPhase => FlowPhase::NAMES,
        Field::Ka(k) => return ka::enum_names(k),
        _ => return None,
    })
}

/// Reads an enum field as its ordinal (see [`enum_names`]).
fn get_ordinal(f: Field, c: &Ctx<'_>) -> Option<u8> {
    match f {
        Field::Phase => c.process.map(|p| p.phase.ordinal()),
        Field::Direction => c.flow.map(|f| f.direction.ordinal()),
        Field::Scope => c.flow.map(|f| f.scope.ordinal()),
        Field::Protocol => c
            .flow
            .map(|f| f.protocol.ordinal())
            .or(c.listener.map(|l| l.protocol.ordinal())),
        Field::FlowPhase => c
            .flow
            .map(|f| f.phase.ordinal())
            .or(c.listener.map(|l| l.phase.ordinal())),
        Field::Ka(k) => c.audit.and_then(|a| ka::ordinal(k, a)),
        _ => None,
    }
}

/// Named lists and macros (macros are raw source, compiled per use site).
#[derive(Debug, Default, Clone)]
pub struct Defs {
    pub lists: HashMap<String, Vec<serde_yaml_ng::Value>>,
    pub macros: HashMap<String, String>,
}

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Int(i64),
}

struct Parser<'a> {
    toks: Vec<Spanned>,
    pos: usize,
    kind: RecordKind,
    in_any: bool,
    defs: &'a Defs,
    bounds: Bounds<'a>,
    end: (usize, usize),
}

/// How deep a condition may nest: parentheses, `not`, `any(...)` and macro uses, macros'
/// own nesting included. The parser, the evaluator and the tree's drop recurse once per
/// level, and rules are compiled on the detection thread of a running aggregator: a
/// condition nested thousands deep is a load error, never a stack overflow.
pub const MAX_NESTING: usize = 64;
/// How many terms (conditions, list items) one condition may expand to, macros expanded:
/// a macro that uses another twice, nested, doubles at each level.
pub const MAX_TERMS: usize = 100_000;
/// How many macros deep a use may go (a cycle ends here).
const MAX_MACRO_DEPTH: usize = 16;

/// What one condition has used of its limits so far, shared by the macros it expands.
#[derive(Clone, Copy)]
struct Bounds<'a> {
    nesting: usize,
    macro_depth: usize,
    terms: &'a std::cell::Cell<usize>,
}

/// Compiles `src` for records of `kind`.
pub fn compile(src: &str, kind: RecordKind, defs: &Defs) -> Result<Condition, ParseError> {
    let terms = std::cell::Cell::new(0);
    let bounds = Bounds {
        nesting: 0,
        macro_depth: 0,
        terms: &terms,
    };
    compile_inner(src, kind, defs, false, bounds).map(Condition::new)
}

/// The enum fields whose values [`Facts`] holds.
const ENUM_FIELDS: [Field; 7] = [
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
fn enum_bits(f: Field) -> Option<(u32, u32)> {
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
    rest: Node,
}

impl Condition {
    fn new(root: Node) -> Condition {
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

    pub fn holds(&self, facts: Facts, c: &Ctx<'_>) -> bool {
        facts.0 & self.refused == 0 && self.rest.eval(c)
    }
}

fn flatten_and(n: Node, out: &mut Vec<Node>) {
    match n {
        Node::And(v) => v.into_iter().for_each(|c| flatten_and(c, out)),
        other => out.push(other),
    }
}

fn compile_inner(
    src: &str,
    kind: RecordKind,
    defs: &Defs,
    in_any: bool,
    bounds: Bounds<'_>,
) -> Result<Node, ParseError> {
    if bounds.macro_depth > MAX_MACRO_DEPTH {
        return Err(ParseError {
            line: 1,
            col: 1,
            msg: "macro nesting too deep (cycle?)".into(),
        });
    }
    let toks = lex(src)?;
    let end = src
        .lines()
        .enumerate()
        .last()
        .map(|(l, s)| (l + 1, s.chars().count() + 1))
        .unwrap_or((1, 1));
    let mut p = Parser {
        toks,
        pos: 0,
        kind,
        in_any,
        defs,
        bounds,
        end,
    };
    let n = p.or()?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(ParseError {
            line: t.line,
            col: t.col,
            msg: format!("unexpected {:?} after expression", t.tok),
        });
    }
    Ok(n)
}

impl Parser<'_> {
    fn here(&self) -> (usize, usize) {
        self.toks
            .get(self.pos)
            .map(|t| (t.line, t.col))
            .unwrap_or(self.end)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        let (line, col) = self.here();
        Err(ParseError {
            line,
            col,
            msg: msg.into(),
        })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }
    /// Runs `parse` one nesting level deeper, refusing past [`MAX_NESTING`].
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Node, ParseError>,
    ) -> Result<Node, ParseError> {
        if self.bounds.nesting >= MAX_NESTING {
            return self.err(format!("condition nested deeper than {MAX_NESTING} levels"));
        }
        self.bounds.nesting += 1;
        let node = parse(self);
        self.bounds.nesting -= 1;
        node
    }
    /// Counts `n` more terms against [`MAX_TERMS`].
    fn count_terms(&self, n: usize) -> Result<(), ParseError> {
        let terms = self.bounds.terms.get().saturating_add(n);
        if terms > MAX_TERMS {
            return self.err(format!(
                "condition expands to more than {MAX_TERMS} terms (macros expanded)"
            ));
        }
        self.bounds.terms.set(terms);
        Ok(())
    }
    fn or(&mut self) -> Result<Node, ParseError> {
        let mut v = vec![self.and()?];
        while self.is_kw("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Node::Or(v)
        })
    }
    fn and(&mut self) -> Result<Node, ParseError> {
        let mut v = vec![self.unary()?];
        while self.is_kw("and") {
            self.pos += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Node::And(v)
        })
    }
    fn unary(&mut self) -> Result<Node, ParseError> {
        self.count_terms(1)?;
        match self.peek() {
            Some(Tok::Ident(s)) if s == "not" => self.nested(|p| {
                p.pos += 1;
                Ok(Node::Not(Box::new(p.unary()?)))
            }),
            Some(Tok::LParen) => self.nested(|p| {
                p.pos += 1;
                let n = p.or()?;
                p.expect(Tok::RParen, "`)`")?;
                Ok(n)
            }),
            Some(Tok::Ident(s)) if s == "true" || s == "false" => {
                let b = s == "true";
                self.pos += 1;
                Ok(Node::Const(b))
            }
            Some(Tok::Ident(s)) if s == "any" => self.nested(|p| {
                p.pos += 1;
                p.expect(Tok::LParen, "`(` after any")?;
                if !p.is_kw("proc.ancestors") {
                    return p.err("any() takes proc.ancestors as its first argument");
                }
                p.pos += 1;
                p.expect(Tok::Comma, "`,`")?;
                let saved = p.in_any;
                p.in_any = true;
                let inner = p.or()?;
                p.in_any = saved;
                p.expect(Tok::RParen, "`)`")?;
                Ok(Node::AnyAncestor(Box::new(inner)))
            }),
            Some(Tok::Ident(name)) => {
                let name = name.clone();
                if let Some(m) = self.defs.macros.get(&name) {
                    let at = self.here();
                    self.pos += 1;
                    if self.bounds.nesting >= MAX_NESTING {
                        self.pos -= 1;
                        return self
                            .err(format!("condition nested deeper than {MAX_NESTING} levels"));
                    }
                    let inner = Bounds {
                        nesting: self.bounds.nesting + 1,
                        macro_depth: self.bounds.macro_depth + 1,
                        ..self.bounds
                    };
                    return compile_inner(m, self.kind, self.defs, self.in_any, inner).map_err(
                        |e| ParseError {
                            line: at.0,
                            col: at.1,
                            msg: format!("in macro {name} at {}:{}: {}", e.line, e.col, e.msg),
                        },
                    );
                }
                self.pred(&name)
            }
            _ => self.err("expected a condition"),
        }
    }
    fn pred(&mut self, name: &str) -> Result<Node, ParseError> {
        let Some((field, ty)) = resolve(name, self.kind, self.in_any) else {
            return self.err(format!(
                "unknown field or macro `{name}` for {} records",
                self.kind.as_str()
            ));
        };
        self.pos += 1;
        let op = match self.peek() {
            Some(Tok::Op(o)) => o.to_string(),
            Some(Tok::Ident(s))
                if ["in", "glob", "regex", "startswith", "contains", "in_cidr"]
                    .contains(&s.as_str()) =>
            {
                s.clone()
            }
            _ => {
                return if ty == Ty::Bool {
                    Ok(Node::BoolField(field))
                } else {
                    self.err(format!("expected an operator after `{name}`"))
                };
            }
        };
        self.pos += 1;
        let at = self.here();
        let bad = |msg: String| ParseError {
            line: at.0,
            col: at.1,
            msg,
        };
        match op.as_str() {
            "in" | "in_cidr" | "startswith" => {
                let lits = if op == "startswith" && matches!(self.peek(), Some(Tok::Str(_))) {
                    vec![self.lit()?]
                } else {
                    self.list()?
                };
                let strs = || {
                    lits.iter().map(|l| match l {
                        Lit::Str(s) => s.clone(),
                        Lit::Int(i) => i.to_string(),
                    })
                };
                match (op.as_str(), ty) {
                    ("in_cidr", Ty::Ip) => Ok(Node::Cidr(
                        field,
                        strs()
                            .map(|s| {
                                s.parse::<IpNet>()
                                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                                    .map_err(|_| bad(format!("bad CIDR {s:?}")))
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    ("in", Ty::Ip) => Ok(Node::InIp(
                        field,
                        strs()
                            .map(|s| {
                                s.parse::<IpAddr>()
                                    .map_err(|_| bad(format!("bad IP {s:?}")))
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    ("in", Ty::Int) => Ok(Node::InInt(
                        field,
                        lits.iter()
                            .map(|l| match l {
                                Lit::Int(i) => Ok(*i),
                                Lit::Str(s) => Err(bad(format!("expected an integer, got {s:?}"))),
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    ("in", Ty::Bytes) => match enum_names(field) {
                        Some(names) => strs()
                            .map(|v| enum_bit(names, &v, name).map_err(bad))
                            .try_fold(0, |mask, bit| Ok(mask | bit?))
                            .map(|mask| Node::EnumIn(field, mask)),
                        None => Ok(Node::InBytes(
                            field,
                            ByteSet::new(strs().map(String::into_bytes).collect()),
                        )),
                    },
                    ("startswith", Ty::Bytes) => Ok(Node::Prefix(
                        field,
                        strs().map(String::into_bytes).collect(),
                    )),
                    _ => Err(bad(format!("`{op}` does not apply to `{name}`"))),
                }
            }
            "glob" | "regex" | "contains" => {
                let Some(Tok::Str(s)) = self.next() else {
                    return Err(bad("expected a string".into()));
                };
                if ty != Ty::Bytes {
                    return Err(bad(format!("`{op}` applies to text fields, not `{name}`")));
                }
                match op.as_str() {
                    "contains" => Ok(Node::Contains(field, s.into_bytes())),
                    "glob" => match s.strip_suffix('*') {
                        // `"/*"`, `"/tmp/*"`: a prefix test, no automaton.
                        Some(prefix) if !prefix.contains(['*', '?']) => {
                            Ok(Node::Prefix(field, vec![prefix.as_bytes().to_vec()]))
                        }
                        _ => Ok(Node::Regex(
                            field,
                            regex::bytes::Regex::new(&glob_to_regex(&s))
                                .map_err(|e| bad(e.to_string()))?,
                        )),
                    },
                    _ => Ok(Node::Regex(
                        field,
                        regex::bytes::Regex::new(&s).map_err(|e| bad(format!("bad regex: {e}")))?,
                    )),
                }
            }
            o => {
                let cop = match o {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let lit = self.lit()?;
                match (ty, lit) {
                    (Ty::Int, Lit::Int(i)) => Ok(Node::CmpInt(field, cop, i)),
                    (Ty::Bytes, Lit::Str(s)) if matches!(cop, CmpOp::Eq | CmpOp::Ne) => {
                        match enum_names(field) {
                            Some(names) => {
                                let bit = enum_bit(names, &s, name).map_err(bad)?;
                                let all = (1u8 << names.len()) - 1;
                                let mask = if cop == CmpOp::Eq { bit } else { all & !bit };
                                Ok(Node::EnumIn(field, mask))
                            }
                            // On a list, `!=` is "no item equals" (not "some item differs").
                            None if cop == CmpOp::Ne && is_list(field) => Ok(Node::Not(Box::new(
                                Node::CmpBytes(field, true, s.into_bytes()),
                            ))),
                            None => Ok(Node::CmpBytes(field, cop == CmpOp::Eq, s.into_bytes())),
                        }
                    }
                    (Ty::Ip, Lit::Str(s)) if matches!(cop, CmpOp::Eq | CmpOp::Ne) => {
                        let ip: IpAddr = s.parse().map_err(|_| bad(format!("bad IP {s:?}")))?;
                        let n = Node::InIp(field, vec![ip]);
                        Ok(if cop == CmpOp::Eq {
                            n
                        } else {
                            Node::Not(Box::new(n))
                        })
                    }
                    _ => Err(bad(format!("type mismatch: `{name}` {o} this value"))),
                }
            }
        }
    }
    fn lit(&mut self) -> Result<Lit, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Lit::Str(s))
            }
            Some(Tok::Int(i)) => {
                self.pos += 1;
                Ok(Lit::Int(i))
            }
            _ => self.err("expected a string or integer"),
        }
    }
    fn list(&mut self) -> Result<Vec<Lit>, ParseError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let mut v = Vec::new();
                loop {
                    if self.peek() == Some(&Tok::RParen) {
                        self.pos += 1;
                        break;
                    }
                    self.count_terms(1)?;
                    if let Some(Tok::Ident(n)) = self.peek().cloned() {
                        self.pos += 1;
                        // a bare word inside ( ... ) is a named list if one exists, else a string
                        if self.defs.lists.contains_key(&n) {
                            v.extend(self.named_list(&n)?);
                        } else {
                            v.push(Lit::Str(n));
                        }
                    } else {
                        v.push(self.lit()?);
                    }
                    match self.peek() {
                        Some(Tok::Comma) => self.pos += 1,
                        Some(Tok::RParen) => {}
                        _ => return self.err("expected `,` or `)` in list"),
                    }
                }
                Ok(v)
            }
            Some(Tok::Ident(n)) => {
                self.pos += 1;
                self.named_list(&n)
            }
            _ => self.err("expected a list `( ... )` or a list name"),
        }
    }
    fn named_list(&mut self, n: &str) -> Result<Vec<Lit>, ParseError> {
        let Some(items) = self.defs.lists.get(n) else {
            self.pos -= 1;
            return self.err(format!("unknown list `{n}`"));
        };
        self.count_terms(items.len())?;
        items
            .iter()
            .map(|v| match v {
                serde_yaml_ng::Value::String(s) => Ok(Lit::Str(s.clone())),
                serde_yaml_ng::Value::Number(x) => x.as_i64().map(Lit::Int).ok_or(()),
                _ => Err(()),
            })
            .collect::<Result<_, ()>>()
            .or_else(|()| {
                self.err(format!(
                    "list `{n}` holds a value that is not a string or integer"
                ))
            })
    }
}

/// The bit of an enum value named in a rule; a name the field never holds is an error, so
/// a typo cannot make a condition silently never match.
fn enum_bit(names: &[&str], value: &str, field: &str) -> Result<u8, String> {
    match names.iter().position(|n| *n == value) {
        Some(i) => Ok(1 << i),
        None => Err(format!(
            "`{field}` is never {value:?}; it is one of {}",
            names.join(", ")
        )),
    }
}

fn glob_to_regex(g: &str) -> String {
    let mut r = String::from("^(?s-u)");
    for c in g.chars() {
        match c {
            '*' => r.push_str(".*"),
            '?' => r.push('.'),
            c => r.push_str(&regex::escape(&c.to_string())),
        }
    }
    r.push('$');
    r
}

/// What a condition is evaluated against.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub process: Option<&'a ProcessRecord>,
    pub flow: Option<&'a FlowRecord>,
    pub listener: Option<&'a ListenerRecord>,
    pub ancestor: Option<&'a Ancestor>,
    pub audit: Option<&'a AuditRecord>,
}

pub enum Val<'a> {
    Null,
    Bytes(std::borrow::Cow<'a, [u8]>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
}

fn basename(b: &[u8]) -> &[u8] {
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

fn enum_name(name: &'static str) -> Val<'static> {
    Val::Bytes(std::borrow::Cow::Borrowed(name.as_bytes()))
}

/// Reads a field; absent values are `Null` and never match.
pub fn get<'a>(f: Field, c: &Ctx<'a>) -> Val<'a> {
    use std::borrow::Cow::Borrowed;
    use Field::*;
    let p = c.process;
    let b = |x: &'a [u8]| Val::Bytes(Borrowed(x));
    match f {
        Pid => p
            .map(|p| Val::Int(p.pid.into()))
            .or_else(|| {
                c.flow
                    .and_then(|f| f.pid)
                    .or(c.listener.and_then(|l| l.pid))
                    .map(|x| Val::Int(x.into()))
            })
            .unwrap_or(Val::Null),
        Ppid => p.map(|p| Val::Int(p.ppid.into())).unwrap_or(Val::Null),
        Comm => p.map(|p| b(&p.comm)).unwrap_or(Val::Null),
        Exe => p.and_then(|p| p.exe.as_deref()).map(b).unwrap_or(Val::Null),
        ExeName => p
            .and_then(|p| p.exe.as_deref())
            .map(|e| b(basename(e)))
            .unwrap_or(Val::Null),
        Cmdline => p
            .map(|p| Val::Bytes(std::borrow::Cow::Owned(p.argv.join(&b' '))))
            .unwrap_or(Val::Null),
        Cwd => p.and_then(|p| p.cwd.as_deref()).map(b).unwrap_or(Val::Null),
        Uid => p.map(|p| Val::Int(p.uid.into())).unwrap_or(Val::Null),
        Euid => p.map(|p| Val::Int(p.euid.into())).unwrap_or(Val::Null),
        Tty => p
            .and_then(|p| p.tty)
            .map(|t| Val::Int(t.into()))
            .unwrap_or(Val::Null),
        ExeDeleted => p.map(|p| Val::Bool(p.exe_deleted)).unwrap_or(Val::Null),
        Preexisting => p.map(|p| Val::Bool(p.preexisting)).unwrap_or(Val::Null),
        StdioSocket => p
            .and_then(|p| p.stdio_is_socket)
            .map(Val::Bool)
            .unwrap_or(Val::Null),
        ContainerId => p
            .and_then(|p| p.container_id.as_deref())
            .map(|s| b(s.as_bytes()))
            .unwrap_or(Val::Null),
        AncestorCount => p
            .map(|p| Val::Int(p.ancestors.len() as i64))
            .unwrap_or(Val::Null),
        Phase | Direction | Scope | Protocol | FlowPhase => get_ordinal(f, c)
            .zip(enum_names(f))
            .and_then(|(o, names)| names.get(usize::from(o)))
            .map(|name| enum_name(name))
            .unwrap_or(Val::Null),
        RootPid => p
            .map(|p| Val::Int(p.ancestors.last().map_or(p.pid, |a| a.pid).into()))
            .unwrap_or(Val::Null),
        RootComm => p
            .map(|p| b(p.ancestors.last().map_or(&p.comm, |a| &a.comm)))
            .unwrap_or(Val::Null),
        CommMatchesExe => p
            .and_then(|p| {
                p.exe.as_deref().map(|e| {
                    let base = basename(e);
                    let base = base.strip_suffix(b" (deleted)").unwrap_or(base);
                    Val::Bool(base.get(..15).unwrap_or(base) == p.comm.as_slice())
                })
            })
            .unwrap_or(Val::Null),
        AComm => c.ancestor.map(|a| b(&a.comm)).unwrap_or(Val::Null),
        AExe => c
            .ancestor
            .and_then(|a| a.exe.as_deref())
            .map(b)
            .unwrap_or(Val::Null),
        APid => c
            .ancestor
            .map(|a| Val::Int(a.pid.into()))
            .unwrap_or(Val::Null),
        AUid => c
            .ancestor
            .and_then(|a| a.uid)
            .map(|u| Val::Int(u.into()))
            .unwrap_or(Val::Null),
        RAddr => c
            .flow
            .and_then(|f| f.remote_addr)
            .map(Val::Ip)
            .unwrap_or(Val::Null),
        RPort => c
            .flow
            .and_then(|f| f.remote_port)
            .map(|x| Val::Int(x.into()))
            .unwrap_or(Val::Null),
        LAddr => c
            .flow
            .map(|f| f.local_addr)
            .or(c.listener.map(|l| l.local_addr))
            .map(Val::Ip)
            .unwrap_or(Val::Null),
        LPort => c
            .flow
            .map(|f| f.local_port)
            .or(c.listener.map(|l| l.local_port))
            .map(|x| Val::Int(x.into()))
            .unwrap_or(Val::Null),
        BytesSent => c
            .flow
            .and_then(|f| f.bytes_sent)
            .map(|x| Val::Int(x as i64))
            .unwrap_or(Val::Null),
        BytesReceived => c
            .flow
            .and_then(|f| f.bytes_received)
            .map(|x| Val::Int(x as i64))
            .unwrap_or(Val::Null),
        Ka(k) => c.audit.map_or(Val::Null, |a| ka_val(ka::get(k, a))),
    }
}

fn ka_val(v: KaValue<'_>) -> Val<'_> {
    use std::borrow::Cow;
    match v {
        KaValue::Null => Val::Null,
        KaValue::Text(t) => Val::Bytes(Cow::Borrowed(t.as_bytes())),
        KaValue::Owned(t) => Val::Bytes(Cow::Owned(t.into_bytes())),
        KaValue::Int(i) => Val::Int(i),
        KaValue::Bool(b) => Val::Bool(b),
        KaValue::Ip(ip) => Val::Ip(ip),
    }
}

/// Whether `pred` holds for the field's value or, for a list field, for one of its items.
#[inline(always)]
fn test<'a>(f: Field, c: &Ctx<'a>, mut pred: impl FnMut(Val<'a>) -> bool) -> bool {
    if let (Field::Ka(k), Some(a)) = (f, c.audit) {
        if ka::is_list(k) {
            return ka::each(k, a, &mut |v| pred(ka_val(v)));
        }
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

const FIELD_NAMES: &[&str] = &[
    "proc.pid",
    "proc.ppid",
    "proc.comm",
    "proc.name",
    "proc.exe",
    "proc.exe_name",
    "proc.cmdline",
    "proc.cwd",
    "proc.uid",
    "proc.euid",
    "proc.tty",
    "proc.exe_deleted",
    "proc.preexisting",
    "proc.stdio_is_socket",
    "proc.container_id",
    "proc.ancestors.count",
    "proc.phase",
    "proc.root.pid",
    "proc.root.comm",
    "proc.comm_matches_exe",
    "fd.rip",
    "fd.raddr",
    "fd.rport",
    "fd.lip",
    "fd.laddr",
    "fd.lport",
    "fd.direction",
    "fd.scope",
    "fd.protocol",
    "fd.bytes_sent",
    "fd.bytes_received",
    "fd.phase",
];

/// Every field name usable in output templates.
pub fn field_names() -> &'static [&'static str] {
    FIELD_NAMES
}

fn is_list(f: Field) -> bool {
    matches!(f, Field::Ka(k) if ka::is_list(k))
}

/// The accessor for a field name regardless of record kind (templates print `<NA>` when absent).
pub fn field_for_name(name: &str) -> Option<Field> {
    [
        RecordKind::Flow,
        RecordKind::Listener,
        RecordKind::Process,
        RecordKind::Audit,
    ]
    .into_iter()
    .find_map(|k| resolve(name, k, false))
    .map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, FlowPhase, ProcessPhase, Protocol, Scope};
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
        assert_eq!(checked, conditions.len() * 4 * 4 * 2 * 3 * 2);
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
            };
            assert_eq!(c.holds(Facts::of(&ctx), &ctx), phase != ProcessPhase::Exit);
        }
        let nothing = Ctx {
            process: None,
            flow: None,
            listener: None,
            ancestor: None,
            audit: None,
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
}
