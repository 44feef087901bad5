//! The steps' dependency graph: unique ids, `needs` (explicit, or the step
//! above), cycles, and what each step transitively needs. Knows nothing of
//! what a step does.

use crate::diagnostic::{Diagnostics, Source, ValuePath, did_you_mean};
use crate::runbook::Code;
use crate::runbook::model::RawStep;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The steps' dependencies: explicit `needs`, or the step above.
pub(super) struct StepGraph {
    /// Each step's id, by index.
    ids: Vec<String>,
    /// Each step's needs that name a step, by index, without repeats.
    needs: Vec<Vec<String>>,
    /// The index of each id (the last step, when an id is used twice).
    index_of: BTreeMap<String, usize>,
}

impl StepGraph {
    /// The graph of `steps`; duplicate ids, unknown needs and a cycle are
    /// reported, in that order.
    pub(super) fn new(source: &Arc<Source>, steps: &[RawStep], problems: &mut Diagnostics) -> Self {
        let index_of = index_ids(source, steps, problems);
        let needs = (0..steps.len())
            .map(|index| known_needs(source, steps, index, &index_of, problems))
            .collect();
        let graph = StepGraph {
            ids: steps.iter().map(|step| step.id.clone()).collect(),
            needs,
            index_of,
        };
        // With an id used twice the edges are ambiguous: a cycle found now
        // would be an artefact.
        if graph.index_of.len() == steps.len()
            && let Some(cycle) = graph.cycle()
        {
            let first = graph.index_of[&cycle[0]];
            problems.push(
                Code::Cycle
                    .diagnostic(format!(
                        "the steps depend on each other in a cycle: {}",
                        cycle.join(" → ")
                    ))
                    .at(source, &ValuePath::step(first).key("needs"))
                    .hint("remove one of these `needs` so that the steps can be ordered"),
            );
        }
        graph
    }

    /// The steps that step `index` needs directly.
    pub(super) fn needs(&self, index: usize) -> &[String] {
        &self.needs[index]
    }

    /// A dependency cycle, as step ids from one back to itself: the first
    /// one a depth-first walk from the first step meets. The walk keeps its
    /// own stack, so a long chain of steps cannot overflow the thread's.
    fn cycle(&self) -> Option<Vec<String>> {
        let mut marks = vec![Mark::New; self.needs.len()];
        for root in 0..self.needs.len() {
            if marks[root] != Mark::New {
                continue;
            }
            // The open steps from `root`, each with how many of its needs
            // have been followed.
            let mut path = vec![(root, 0)];
            marks[root] = Mark::Open;
            while let Some((index, followed)) = path.last_mut() {
                let index = *index;
                let Some(need) = self.needs[index].get(*followed) else {
                    marks[index] = Mark::Done;
                    path.pop();
                    continue;
                };
                *followed += 1;
                let next = self.index_of[need];
                match marks[next] {
                    Mark::Open => return Some(self.cycle_on(&path, next)),
                    Mark::New => {
                        marks[next] = Mark::Open;
                        path.push((next, 0));
                    }
                    Mark::Done => {}
                }
            }
        }
        None
    }

    /// The ids of the cycle that closes when the walk along `path` meets
    /// `start`, which is on it, again.
    fn cycle_on(&self, path: &[(usize, usize)], start: usize) -> Vec<String> {
        let from = path
            .iter()
            .position(|(index, _)| *index == start)
            .unwrap_or(0);
        path[from..]
            .iter()
            .map(|(index, _)| *index)
            .chain([start])
            .map(|index| self.ids[index].clone())
            .collect()
    }

    /// Every step this one transitively needs.
    pub(super) fn ancestors(&self, index: usize) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut stack: Vec<&String> = self.needs[index].iter().collect();
        while let Some(id) = stack.pop() {
            if found.insert(id.clone()) {
                stack.extend(self.needs[self.index_of[id]].iter());
            }
        }
        found
    }
}

/// Where a step stands in the depth-first walk that looks for a cycle.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    /// Not reached yet.
    New,
    /// On the current path: meeting it again closes a cycle.
    Open,
    /// Every step it needs has been walked, without a cycle.
    Done,
}

/// The index of every id; an id used twice is reported at its second use.
fn index_ids(
    source: &Arc<Source>,
    steps: &[RawStep],
    problems: &mut Diagnostics,
) -> BTreeMap<String, usize> {
    let mut index_of = BTreeMap::new();
    for (index, step) in steps.iter().enumerate() {
        if index_of.insert(step.id.clone(), index).is_some() {
            problems.push(
                Code::DuplicateStepId
                    .diagnostic(format!("step id `{}` is used twice", step.id))
                    .at(source, &ValuePath::step(index).key("id"))
                    .hint("give every step its own id"),
            );
        }
    }
    index_of
}

/// Step `index`'s needs: as declared, else the step above. Each unknown one
/// is reported and left out, and a repeated one is kept once.
fn known_needs(
    source: &Arc<Source>,
    steps: &[RawStep],
    index: usize,
    index_of: &BTreeMap<String, usize>,
    problems: &mut Diagnostics,
) -> Vec<String> {
    let step = &steps[index];
    let declared = match &step.needs {
        Some(declared) => declared.clone(),
        None if index == 0 => Vec::new(),
        None => vec![steps[index - 1].id.clone()],
    };
    let mut known = Vec::new();
    for (position, need) in declared.into_iter().enumerate() {
        if !index_of.contains_key(&need) {
            let hint = match did_you_mean(&need, index_of.keys().map(String::as_str)) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => "name the id of another step".to_owned(),
            };
            problems.push(
                Code::UnknownNeed
                    .diagnostic(format!("step `{}` needs unknown step `{need}`", step.id))
                    .at(source, &ValuePath::step(index).key("needs").index(position))
                    .hint(hint),
            );
        } else if !known.contains(&need) {
            known.push(need);
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, source};

    /// The graph of steps written as `id needs…` lines; `id -` has no
    /// `needs` key (it follows the step above).
    fn graph(lines: &[&str]) -> (StepGraph, Diagnostics, Arc<Source>) {
        let mut text = String::new();
        for line in lines {
            let mut words = line.split_whitespace();
            let id = words.next().unwrap();
            text.push_str(&format!("[[steps]]\nid = \"{id}\"\n"));
            let needs: Vec<String> = words.map(|need| format!("\"{need}\"")).collect();
            if needs.first().map(String::as_str) != Some("\"-\"") {
                text.push_str(&format!("needs = [{}]\n", needs.join(", ")));
            }
        }
        let steps: Vec<RawStep> = crate::runbook::validate::testing::raw::<
            std::collections::BTreeMap<String, Vec<RawStep>>,
        >(&text)
        .remove("steps")
        .unwrap();
        let source = source(&text);
        let mut problems = Diagnostics::default();
        let graph = StepGraph::new(&source, &steps, &mut problems);
        (graph, problems, source)
    }

    #[test]
    fn a_step_without_needs_follows_the_step_above_and_the_first_follows_none() {
        let (graph, problems, _) = graph(&["a -", "b -", "c a"]);
        assert!(problems.is_empty());
        assert!(graph.needs(0).is_empty());
        assert_eq!(graph.needs(1), ["a"]);
        assert_eq!(graph.needs(2), ["a"]);
        assert_eq!(graph.ancestors(2), ["a".to_owned()].into());
    }

    #[test]
    fn empty_needs_means_no_dependency_and_a_repeated_need_counts_once() {
        let (graph, problems, _) = graph(&["a", "b", "c a a b"]);
        assert!(problems.is_empty());
        assert!(graph.needs(1).is_empty());
        assert_eq!(graph.needs(2), ["a", "b"]);
    }

    #[test]
    fn ancestors_are_every_step_needed_transitively_and_only_those() {
        let (graph, _, _) = graph(&["a", "b a", "c b", "d", "e c d"]);
        let ancestors = |index| graph.ancestors(index).into_iter().collect::<Vec<_>>();
        assert_eq!(ancestors(2), ["a", "b"]);
        assert_eq!(ancestors(4), ["a", "b", "c", "d"]);
        assert!(ancestors(3).is_empty());
    }

    #[test]
    fn an_unknown_need_is_reported_with_a_near_name_and_left_out() {
        let (graph, problems, _) = graph(&["deploy", "verify deploi"]);
        assert_eq!(codes(&problems), ["UnknownNeed"]);
        assert!(problems.0[0].hint.as_deref().unwrap().contains("`deploy`"));
        assert!(graph.needs(1).is_empty());
    }

    #[test]
    fn a_cycle_is_reported_once_from_its_first_step_back_to_it() {
        let (_, problems, source) = graph(&["a", "b a d", "c b", "d c"]);
        assert_eq!(codes(&problems), ["Cycle"]);
        assert!(
            problems.0[0].message.ends_with("b → d → c → b"),
            "{}",
            problems.0[0].message
        );
        let place = problems.0[0].place.as_ref().unwrap();
        assert_eq!(
            source.line_column(place.span.start).0,
            6,
            "at `needs` of `b`"
        );
    }

    #[test]
    fn a_step_that_needs_itself_is_a_cycle() {
        let (_, problems, _) = graph(&["a a"]);
        assert_eq!(codes(&problems), ["Cycle"]);
        assert!(problems.0[0].message.ends_with(": a → a"));
    }

    #[test]
    fn a_duplicate_id_is_reported_and_hides_the_cycles_it_would_make_up() {
        let (_, problems, _) = graph(&["a b", "b a", "a"]);
        assert_eq!(codes(&problems), ["DuplicateStepId"]);
    }

    #[test]
    fn a_chain_of_many_steps_has_no_cycle_and_does_not_exhaust_the_stack() {
        let lines: Vec<String> = (0..20_000)
            .map(|index| match index {
                0 => "s0".to_owned(),
                _ => format!("s{index} s{}", index - 1),
            })
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (graph, problems, _) = graph(&lines);
        assert!(problems.is_empty());
        assert!(graph.cycle().is_none());
    }
}
