//! The lexer: source text to tokens with their line and column.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

#[derive(Debug, Clone)]
pub(super) struct Spanned {
    pub(super) tok: Tok,
    pub(super) line: usize,
    pub(super) col: usize,
}

pub(super) fn lex(src: &str) -> Result<Vec<Spanned>, ParseError> {
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
