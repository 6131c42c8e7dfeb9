//! Indexes that follow one watcher's events: EndpointSlices by Service
//! ([`endpoints`](crate::endpoints)) and pools by the Services they name
//! ([`pools`](crate::pools)). Each is built by a [`Filing`] and held in a [`Relisted`], which
//! builds a re-list aside and swaps it in whole at its end, as kube-runtime's store does, so
//! readers never see a half-listed cluster.

use std::sync::{RwLock, RwLockReadGuard};

use kube::runtime::watcher;

/// How an index files and unfiles the objects of kind `K`.
pub trait Filing<K>: Default {
    /// Files `object`, or files it anew where it changed (a relabelled slice moves).
    fn file(&mut self, object: &K);
    /// Forgets `object`.
    fn unfile(&mut self, object: &K);
}

/// An index `I` that follows a watcher's events.
#[derive(Debug, Default)]
pub struct Relisted<I> {
    inner: RwLock<State<I>>,
}

#[derive(Debug, Default)]
struct State<I> {
    current: I,
    /// A re-list in progress, built aside.
    relisting: Option<I>,
}

impl<I> Relisted<I> {
    /// Follows one event of the watcher.
    pub fn apply<K>(&self, event: &watcher::Event<K>)
    where
        I: Filing<K>,
    {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(object) => state.current.file(object),
            watcher::Event::Delete(object) => state.current.unfile(object),
            watcher::Event::Init => state.relisting = Some(I::default()),
            watcher::Event::InitApply(object) => {
                state.relisting.get_or_insert_with(I::default).file(object);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.current = listed;
                }
            }
        }
    }

    /// The index as it stands (a re-list in progress is not seen until it ends).
    pub fn read(&self) -> Current<'_, I> {
        Current(self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A read of the current index.
pub struct Current<'a, I>(RwLockReadGuard<'a, State<I>>);

impl<I> std::ops::Deref for Current<'_, I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.0.current
    }
}
