//! What a compiled recipe contains, read from Rhai's AST (the `internals` feature): every
//! call, import and string literal with its position.
//!
//! One walk serves lint, the runner (which call failed, whether the recipe uses
//! `secret.get`, which imports to check before running) and the tests. It visits
//! `Stmt::FnCall` as well as `Expr::FnCall`/`Expr::MethodCall` (a call used as a statement is
//! its own node) and every function body, closures included (DESIGN.md §10).

use rhai::{AST, ASTNode, Expr, Position, Stmt};

/// How a call is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `name(args)` or `ns::name(args)`.
    Function,
    /// `receiver.name(args)`.
    Method,
}

/// A literal argument, as far as lint cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A string literal.
    Str(String),
    /// An array literal: each element's string value when it is a string literal.
    Array(Vec<Option<String>>),
    /// An integer literal and where it is written (lint reads how: `0o644` or `644`).
    Int(i64, Position),
    /// A map literal `#{key: value, …}`: each key with its value and the key's position.
    Map(Vec<(String, Literal, Position)>),
    /// Anything else.
    Other,
}

/// One call in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// Function or method syntax.
    pub kind: CallKind,
    /// The function's name.
    pub name: String,
    /// `steps` in `steps::name(…)`.
    pub namespace: Option<String>,
    /// For a method call on a plain variable (`lxc.create(…)`), the variable's name.
    pub receiver: Option<String>,
    /// Whether that variable is a local or parameter (which shadows an API handle).
    pub receiver_local: bool,
    /// The arguments as written (the receiver is not counted).
    pub args: Vec<Literal>,
    /// Where the call is.
    pub pos: Position,
}

impl CallSite {
    /// The call as a recipe writes it: `lxc.create`, `steps::begin`, `print`.
    pub fn display(&self) -> String {
        match (&self.namespace, &self.receiver, self.kind) {
            (Some(ns), ..) => format!("{ns}::{}", self.name),
            (None, Some(r), CallKind::Method) => format!("{r}.{}", self.name),
            (None, None, CallKind::Method) => format!(".{}", self.name),
            _ => self.name.clone(),
        }
    }

    /// The API handle this method is called on, if the receiver is one (not a local
    /// variable of the same name).
    pub fn handle(&self) -> Option<&str> {
        if self.kind != CallKind::Method || self.receiver_local {
            return None;
        }
        let r = self.receiver.as_deref()?;
        crate::api::HANDLE_NAMES.contains(&r).then_some(r)
    }

    /// Whether this is `handle.name(…)` on the API handle `handle`.
    pub fn is_method_on(&self, handle: &str, name: &str) -> bool {
        self.handle() == Some(handle) && self.name == name
    }
}

/// One `import` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSite {
    /// The path when it is a string literal (`None`: computed at run time).
    pub path: Option<String>,
    /// The alias (`as steps`), empty without one.
    pub alias: String,
    /// Where the statement is.
    pub pos: Position,
}

/// Everything the walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Every call except operators, in walk order.
    pub calls: Vec<CallSite>,
    /// Every import.
    pub imports: Vec<ImportSite>,
    /// Every string literal with its position.
    pub strings: Vec<(String, Position)>,
    /// Script-defined functions: `(name, number of parameters)`.
    pub functions: Vec<(String, usize)>,
}

impl Facts {
    /// Walk `ast`, function bodies included.
    pub fn of(ast: &AST) -> Self {
        let mut facts = Self {
            functions: ast
                .iter_functions()
                .map(|f| (f.name.to_owned(), f.params.len()))
                .collect(),
            ..Self::default()
        };
        ast.walk(&mut |path: &[ASTNode]| {
            facts.visit(path);
            true
        });
        facts
    }

    /// The call at `pos`, if one starts there.
    pub fn call_at(&self, pos: Position) -> Option<&CallSite> {
        self.calls.iter().find(|c| c.pos == pos)
    }

    fn visit(&mut self, path: &[ASTNode]) {
        let Some(node) = path.last() else { return };
        match node {
            ASTNode::Stmt(Stmt::FnCall(x, pos)) | ASTNode::Expr(Expr::FnCall(x, pos)) => {
                if x.op_token.is_some() || x.is_operator_call() {
                    return;
                }
                self.calls.push(CallSite {
                    kind: CallKind::Function,
                    name: x.name.to_string(),
                    namespace: (!x.namespace.is_empty()).then(|| x.namespace.to_string()),
                    receiver: None,
                    receiver_local: false,
                    args: x.args.iter().map(literal).collect(),
                    pos: *pos,
                });
            }
            ASTNode::Expr(e @ Expr::MethodCall(x, pos)) => {
                let (receiver, receiver_local) = receiver(path, e).unzip();
                self.calls.push(CallSite {
                    kind: CallKind::Method,
                    name: x.name.to_string(),
                    namespace: None,
                    receiver,
                    receiver_local: receiver_local.unwrap_or(false),
                    args: x.args.iter().map(literal).collect(),
                    pos: *pos,
                });
            }
            ASTNode::Stmt(Stmt::Import(x, pos)) => {
                let (expr, alias) = &**x;
                self.imports.push(ImportSite {
                    path: match expr {
                        Expr::StringConstant(s, _) => Some(s.to_string()),
                        _ => None,
                    },
                    alias: alias.name.to_string(),
                    pos: *pos,
                });
            }
            ASTNode::Expr(Expr::StringConstant(s, pos)) => {
                self.strings.push((s.to_string(), *pos));
            }
            _ => {}
        }
    }
}

fn literal(e: &Expr) -> Literal {
    match e {
        Expr::StringConstant(s, _) => Literal::Str(s.to_string()),
        Expr::Array(items, _) => Literal::Array(
            items
                .iter()
                .map(|i| match i {
                    Expr::StringConstant(s, _) => Some(s.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        Expr::IntegerConstant(n, pos) => Literal::Int(*n, *pos),
        Expr::Map(x, _) => Literal::Map(
            x.0.iter()
                .map(|(k, v)| (k.name.to_string(), literal(v), k.pos))
                .collect(),
        ),
        _ => Literal::Other,
    }
}

/// The variable a method call is made on, when it is a plain variable: `lxc` in
/// `lxc.create(x)` and in `lxc.create(x).field`, but not `c` in `a.b().c()`; with whether
/// the parser resolved it to a local or parameter (API handles are never locals).
fn receiver(path: &[ASTNode], call: &Expr) -> Option<(String, bool)> {
    let n = path.len();
    let parent = match path.get(n.checked_sub(2)?)? {
        ASTNode::Expr(Expr::Dot(x, ..)) => x,
        _ => return None,
    };
    let grandparent = n
        .checked_sub(3)
        .and_then(|i| path.get(i))
        .and_then(|g| match g {
            ASTNode::Expr(Expr::Dot(x, ..)) => Some(x),
            _ => None,
        });
    let object = if std::ptr::eq(&parent.rhs, call) {
        // `object.call` at the end of a chain; inside a chain the object is a call result.
        match grandparent {
            Some(g) if std::ptr::eq(&g.rhs, path[n - 2].expr_ref()?) => return None,
            _ => &parent.lhs,
        }
    } else if std::ptr::eq(&parent.lhs, call) {
        // `object.call(…).more`: the chain's object is the grandparent's left side.
        &grandparent?.lhs
    } else {
        return None;
    };
    match object {
        Expr::Variable(v, short, ..) if v.2.is_empty() => {
            Some((v.1.to_string(), v.0.is_some() || short.is_some()))
        }
        _ => None,
    }
}

trait ExprRef<'a> {
    fn expr_ref(&self) -> Option<&'a Expr>;
}

impl<'a> ExprRef<'a> for ASTNode<'a> {
    fn expr_ref(&self) -> Option<&'a Expr> {
        match self {
            ASTNode::Expr(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::engine::{EngineOptions, compile, new_engine};

    fn facts(src: &str) -> Facts {
        Facts::of(&compile(&new_engine(EngineOptions::default()), src).unwrap())
    }

    #[test]
    fn finds_statement_calls_method_calls_and_fn_bodies() {
        let f = facts(
            "import \"steps\" as steps;\n\
             print(\"a\");\n\
             let x = config.lxc(901).name;\n\
             fn g(a) { log.info(`x${a}`); steps::begin(a, \"n\"); }\n\
             let y = [1].len();\n",
        );
        let shown: Vec<(String, usize, usize)> = f
            .calls
            .iter()
            .map(|c| (c.display(), c.args.len(), c.pos.line().unwrap()))
            .collect();
        assert_eq!(
            shown,
            [
                ("print".to_owned(), 1, 2),
                ("config.lxc".to_owned(), 1, 3),
                (".len".to_owned(), 0, 5),
                ("log.info".to_owned(), 1, 4),
                ("steps::begin".to_owned(), 2, 4),
            ]
        );
        assert_eq!(f.imports[0].path.as_deref(), Some("steps"));
        assert_eq!(f.imports[0].alias, "steps");
        assert_eq!(f.functions, [("g".to_owned(), 1)]);
    }

    #[test]
    fn chained_calls_have_no_plain_receiver() {
        let f = facts("let a = \"x\"; a.trim().to_upper();");
        let r: Vec<Option<String>> = f.calls.iter().map(|c| c.receiver.clone()).collect();
        assert_eq!(r, [Some("a".to_owned()), None]);
    }

    #[test]
    fn map_and_integer_literals_are_kept_with_positions() {
        let f = facts("fn x(a, b) {}\nx(#{ timeout: \"10 min\", n: 1 }, 0o644);");
        let Literal::Map(m) = &f.calls[0].args[0] else {
            panic!("{:?}", f.calls[0].args)
        };
        let keys: Vec<(&str, &Literal, (usize, usize))> = m
            .iter()
            .map(|(k, v, p)| (k.as_str(), v, (p.line().unwrap(), p.position().unwrap())))
            .collect();
        assert_eq!(
            keys,
            [
                ("timeout", &Literal::Str("10 min".into()), (2, 6)),
                ("n", &Literal::Int(1, Position::new(2, 28)), (2, 25)),
            ]
        );
        assert_eq!(
            f.calls[0].args[1],
            Literal::Int(0o644, Position::new(2, 33))
        );
    }

    #[test]
    fn array_literals_are_kept_for_lint() {
        let f = facts("fn x(v) {} x([\"sh\", 1]);");
        assert_eq!(
            f.calls[0].args,
            [Literal::Array(vec![Some("sh".into()), None])]
        );
    }
}
