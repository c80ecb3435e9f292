//! The recursive-descent parser: tokens to a typed tree, names resolved per record kind,
//! macros and lists expanded within the nesting and expansion limits.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::eval::{ByteSet, CmpOp, Condition, Node};
use super::fields::{enum_names, is_list, resolve, Ty};
use super::lex::{lex, ParseError, Spanned, Tok};
use crate::model::RecordKind;

/// Named lists and macros (macros are raw source, compiled per use site).
#[derive(Debug, Default, Clone)]
pub struct Defs {
    pub lists: HashMap<String, Vec<serde_yaml_ng::Value>>,
    pub macros: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub(super) enum Lit {
    Str(String),
    Int(i64),
}

pub(super) struct Parser<'a> {
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
pub(super) const MAX_MACRO_DEPTH: usize = 16;

/// What one condition has used of its limits so far, shared by the macros it expands.
#[derive(Clone, Copy)]
pub(super) struct Bounds<'a> {
    pub(super) nesting: usize,
    pub(super) macro_depth: usize,
    pub(super) terms: &'a std::cell::Cell<usize>,
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

pub(super) fn compile_inner(
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
pub(super) fn enum_bit(names: &[&str], value: &str, field: &str) -> Result<u8, String> {
    match names.iter().position(|n| *n == value) {
        Some(i) => Ok(1 << i),
        None => Err(format!(
            "`{field}` is never {value:?}; it is one of {}",
            names.join(", ")
        )),
    }
}

pub(super) fn glob_to_regex(g: &str) -> String {
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
