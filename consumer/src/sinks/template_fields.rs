//! Which fields a Handlebars template asks for that its context never carries: the compiled
//! template's expressions walked against the context's shape, for `check-config`'s warnings.
//! Templates render such a field as empty text (Butler's templates rely on that for fields
//! that are sometimes absent), so a misspelt `{{appname}}` or a field from Butler's
//! client-managed templates (`{{taskName}}`) would otherwise show only as a blank in an alert.
//!
//! The shape is a JSON value with every field the context can have: an object's keys are its
//! fields, an array's first element is the shape of its entries, `null` is a value of unknown
//! shape (anything below it is accepted). Scopes follow Handlebars: `#each` enters an entry (its
//! `as |entry index|` names too), `#with` the value, `../` goes up, `@root` to the top; `this`,
//! `@index`, `@key`, `@first`, `@last` and the block helpers' own names are not fields. What a
//! helper this module does not know renders with is unknown, so nothing inside it is reported.

use std::collections::HashMap;

use handlebars::template::{BlockParam, HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};
use serde_json::Value;

use super::template::{TemplateError, without_triple_stash};

/// Block helpers whose body renders in the current scope.
const SAME_SCOPE: &[&str] = &["if", "unless"];

/// The fields (as written, e.g. `appname`, `executionDuration.hour`) that `template` uses and
/// `shape` does not have, each once, in the order they first appear.
pub fn unknown_fields(template: &str, shape: &Value) -> Result<Vec<String>, TemplateError> {
    let compiled = Template::compile(&without_triple_stash(template))
        .map_err(|e| TemplateError::Compile(e.to_string()))?;
    let mut walk = Walk {
        scopes: vec![Scope::of(Some(shape))],
        unknown: Vec::new(),
    };
    walk.elements(&compiled.elements);
    Ok(walk.unknown)
}

/// What `this` is in a block, and the names its block parameters bring.
struct Scope<'a> {
    /// `None`: not known (a helper this module does not know chose it).
    this: Option<&'a Value>,
    names: HashMap<String, Option<&'a Value>>,
}

impl<'a> Scope<'a> {
    fn of(this: Option<&'a Value>) -> Self {
        Self {
            this,
            names: HashMap::new(),
        }
    }
}

struct Walk<'a> {
    scopes: Vec<Scope<'a>>,
    unknown: Vec<String>,
}

impl<'a> Walk<'a> {
    fn elements(&mut self, elements: &[TemplateElement]) {
        for element in elements {
            match element {
                TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                    self.expression(helper);
                }
                TemplateElement::HelperBlock(helper) => self.block(helper),
                // Partials and decorators bring their own templates and contexts.
                TemplateElement::RawString(_)
                | TemplateElement::Comment(_)
                | TemplateElement::DecoratorExpression(_)
                | TemplateElement::DecoratorBlock(_)
                | TemplateElement::PartialExpression(_)
                | TemplateElement::PartialBlock(_) => {}
                // `TemplateElement` is non-exhaustive: what a later handlebars adds is not
                // checked rather than guessed at.
                _ => {}
            }
        }
    }

    /// `{{field}}`, or `{{helper arg …}}`: the field, or the helper's arguments.
    fn expression(&mut self, helper: &HelperTemplate) {
        if let Parameter::Path(path) = &helper.name {
            self.path(path);
        }
        self.arguments(helper);
    }

    fn arguments(&mut self, helper: &HelperTemplate) {
        for parameter in helper.params.iter().chain(helper.hash.values()) {
            self.parameter(parameter);
        }
    }

    fn parameter(&mut self, parameter: &Parameter) {
        match parameter {
            Parameter::Path(path) => {
                self.path(path);
            }
            Parameter::Subexpression(sub) => match sub.element.as_ref() {
                TemplateElement::Expression(helper) => self.expression(helper),
                other => self.elements(std::slice::from_ref(other)),
            },
            _ => {}
        }
    }

    fn block(&mut self, helper: &HelperTemplate) {
        self.arguments(helper);
        let name = match &helper.name {
            Parameter::Name(name) => name.as_str(),
            _ => "",
        };
        let first = helper
            .params
            .first()
            .and_then(|p| self.resolve(p))
            .flatten();
        let (inner, entry) = match name {
            _ if SAME_SCOPE.contains(&name) => (self.current(), None),
            // An object's values differ in shape, so only a list's entries are known.
            "each" => {
                let entry = match first {
                    Some(Value::Array(items)) => items.first(),
                    _ => None,
                };
                (entry, entry)
            }
            "with" => (first, first),
            _ => (None, None),
        };
        let mut scope = Scope::of(inner);
        match &helper.block_param {
            Some(BlockParam::Single(Parameter::Name(n))) => {
                scope.names.insert(n.clone(), entry);
            }
            Some(BlockParam::Pair((Parameter::Name(n), Parameter::Name(index)))) => {
                scope.names.insert(n.clone(), entry);
                scope.names.insert(index.clone(), None);
            }
            _ => {}
        }
        if let Some(template) = &helper.template {
            self.scopes.push(scope);
            self.elements(&template.elements);
            self.scopes.pop();
        }
        // `{{else}}` renders in the scope around the block.
        if let Some(inverse) = &helper.inverse {
            self.elements(&inverse.elements);
        }
    }

    fn current(&self) -> Option<&'a Value> {
        self.scopes.last().and_then(|s| s.this)
    }

    /// The shape a parameter points at: `Some(None)` when it is not known (a literal, a
    /// helper's result), `None` when the path is not in the context (reported).
    fn resolve(&mut self, parameter: &Parameter) -> Option<Option<&'a Value>> {
        match parameter {
            Parameter::Path(path) => self.path(path),
            _ => Some(None),
        }
    }

    /// Reports `path` when the context has no such field; its shape otherwise (`Some(None)`:
    /// not known, so anything below it goes).
    fn path(&mut self, path: &Path) -> Option<Option<&'a Value>> {
        let Path::Relative((segments, raw)) = path else {
            // `@index`, `@key`, `@first`, `@last`: set by the block helper.
            return Some(None);
        };
        let names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                PathSeg::Named(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let (base, rest) = if raw.starts_with("@root") {
            (self.scopes.first().and_then(|s| s.this), &names[..])
        } else {
            // Each `../` is a `Ruled` segment before the names.
            let ups = segments.len() - names.len();
            let at = self.scopes.len().saturating_sub(1 + ups);
            let visible = &self.scopes[..=at];
            let named = names.first().and_then(|first| {
                visible
                    .iter()
                    .rev()
                    .find_map(|s| s.names.get(*first).copied())
            });
            match named {
                Some(value) => (value, &names[1..]),
                None => (visible.last().and_then(|s| s.this), &names[..]),
            }
        };
        let Some(mut shape) = base else {
            return Some(None);
        };
        for name in rest {
            let next = match shape {
                Value::Null => return Some(None),
                Value::Object(fields) => fields.get(*name),
                Value::Array(items) if name.parse::<usize>().is_ok() => {
                    // An empty list in the shape: its entries are not known.
                    let Some(first) = items.first() else {
                        return Some(None);
                    };
                    Some(first)
                }
                _ => None,
            };
            match next {
                Some(value) => shape = value,
                None => {
                    if !self.unknown.contains(raw) {
                        self.unknown.push(raw.clone());
                    }
                    return None;
                }
            }
        }
        Some(Some(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> Value {
        json!({
            "appName": "", "tenantId": "", "scriptLogTail": "", "statements": null,
            "executionDuration": {"hours": 0, "minutes": 0},
            "genericUrls": [{"id": "", "linkText": "", "url": ""}],
            "appTags": [""],
            "missing": [],
        })
    }

    fn unknown(template: &str) -> Vec<String> {
        unknown_fields(template, &shape()).unwrap()
    }

    #[test]
    fn fields_the_context_has_are_not_reported() {
        let template = r#"{{appName}} {{{ scriptLogTail }}} {{executionDuration.hours}}
            {{#each genericUrls}}{{this.linkText}} {{url}} {{@index}} {{../tenantId}}
              {{#if (eq id "docs")}}{{@root.appName}}{{else}}{{@first}}{{/if}}{{/each}}
            {{#each genericUrls as |link i|}}{{link.url}} {{i}} {{this.id}}{{/each}}
            {{#with executionDuration}}{{minutes}}{{/with}}
            {{#each appTags}}{{this}}{{/each}} {{code scriptLogTail}} {{statements.anything.below}}
            {{lookup genericUrls 0}} {{genericUrls.0.url}} {{#unless appName}}{{tenantId}}{{/unless}}
            {{!-- {{notAField}} --}} {{#each missing}}{{this.whatever}}{{/each}}
            {{#raw}}{{anything}}{{/raw}} {{> partial}}"#;
        assert_eq!(unknown(template), Vec::<String>::new());
    }

    #[test]
    fn fields_the_context_never_carries_are_reported_once_as_written() {
        let template = r#"{{appname}} {{taskName}} {{appname}} {{executionDuration.hour}}
            {{#each genericUrls}}{{linktext}} {{../appNam}}{{/each}}
            {{#if (eq hostName "x")}}{{/if}} {{#each nothing}}{{inside}}{{/each}}
            {{#with executionDuration}}{{second}}{{/with}} {{appName.length}}
            {{#each genericUrls as |link|}}{{link.href}}{{/each}} {{@root.qmc}}"#;
        assert_eq!(
            unknown(template),
            [
                "appname",
                "taskName",
                "executionDuration.hour",
                "linktext",
                "../appNam",
                "hostName",
                "nothing",
                "second",
                "appName.length",
                "link.href",
                "@root.qmc",
            ]
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_an_error() {
        assert!(matches!(
            unknown_fields("{{#if}}", &shape()),
            Err(TemplateError::Compile(_))
        ));
    }
}
