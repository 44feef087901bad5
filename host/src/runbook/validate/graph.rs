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
