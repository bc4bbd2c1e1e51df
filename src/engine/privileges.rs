//! Ownership and privileges, as Postgres has them: the user who creates a stream or table owns
//! it; its owner and superusers may do anything with it; others need a `GRANT` of SELECT (to
//! read it, in SQL or with a Kafka consumer) or INSERT (to write it, with INSERT or a Kafka
//! producer). Dropping, replacing, granting and terminating the query that writes it take
//! ownership. Under trust authentication on loopback, clients connect as the superuser `eddy`.
//!
//! Called by the DDL and serving paths with the session's user, and by the Kafka server
//! (through `auth::Users`) with the SASL user for the topics relations use.

use std::collections::BTreeMap;

use super::{Engine, Output, Session};
use crate::auth::{TopicAccess, TopicPolicy};
use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::sql::Privilege;

/// `table orders` / `stream orders`, as Postgres names objects in permission errors.
fn object(rel: &RelationDef) -> String {
    format!("{} {}", rel.kind.word().to_lowercase(), rel.name)
}

impl Engine {
    fn owns(&self, user: &str, rel: &RelationDef) -> bool {
        self.users.is_superuser(user) || rel.owner.as_deref() == Some(user)
    }

    /// Only the owner (or a superuser) may `what` (drop, replace, grant on) `rel`.
    pub(super) fn require_owner(&self, user: &str, rel: &RelationDef) -> Result<()> {
        if self.owns(user, rel) {
            return Ok(());
        }
        Err(EddyError::PermissionDenied(format!("must be owner of {}", object(rel))))
    }

    /// Whether `user` may read (SELECT) or write (INSERT) `rel`.
    pub(super) fn may(&self, user: &str, rel: &RelationDef, privilege: Privilege) -> bool {
        self.owns(user, rel) || rel.grants.get(user).is_some_and(|p| p.contains(&privilege))
    }

    pub(super) fn require_privilege(&self, user: &str, rel: &RelationDef, privilege: Privilege) -> Result<()> {
        if self.may(user, rel, privilege) {
            return Ok(());
        }
        Err(EddyError::PermissionDenied(format!("permission denied for {}", object(rel))))
    }

    /// SELECT on every relation of Eddy's that a query names (the names DataFusion does not
    /// know it reports itself; `pg_catalog` and the like are open to everyone).
    pub(super) fn require_select(&self, user: &str, names: &[String]) -> Result<()> {
        for name in names {
            if let Some(rel) = self.catalog.relation(name) {
                self.require_privilege(user, &rel, Privilege::Select)?;
            }
        }
        Ok(())
    }

    /// Only the owner of what a query writes (or a superuser) may terminate, pause or resume it.
    pub(super) fn require_query_owner(&self, user: &str, query_id: &str, verb: &str) -> Result<()> {
        let written = self.catalog.relations().into_iter().find(|r| r.written_by.as_deref() == Some(query_id));
        match written {
            Some(rel) if !self.owns(user, &rel) => Err(EddyError::PermissionDenied(format!(
                "must be owner of {} to {verb} query {query_id}",
                object(&rel)
            ))),
            None if !self.users.is_superuser(user) => {
                Err(EddyError::PermissionDenied(format!("must be a superuser to {verb} query {query_id}")))
            }
            _ => Ok(()),
        }
    }

    /// `GRANT` / `REVOKE`: the owner (or a superuser) gives or takes privileges.
    pub(super) async fn grant(
        &self,
        session: &Session,
        privileges: Vec<Privilege>,
        relations: Vec<String>,
        users: Vec<String>,
        revoke: bool,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        let mut changed = Vec::new();
        for name in &relations {
            let mut rel = self
                .catalog
                .relation(name)
                .ok_or_else(|| EddyError::UndefinedRelation(format!("stream or table {name}")))?;
            self.require_owner(&session.user, &rel)?;
            for user in &users {
                if !revoke && !self.users.exists(user) && !self.users.is_superuser(user) {
                    return Err(EddyError::UndefinedObject(format!("role \"{user}\" does not exist")));
                }
                grant_to(&mut rel.grants, user, &privileges, revoke);
            }
            changed.push(rel);
        }
        for rel in &changed {
            self.catalog.update_relation(rel)?;
        }
        Ok(Output::Command { tag: if revoke { "REVOKE" } else { "GRANT" }.into() })
    }

    /// For the Kafka server: whether SASL user `user` may read or write `topic`. A topic no
    /// stream or table uses is anyone's (as in Kafka without an authorizer); one that several
    /// use needs the privilege on one of them.
    pub fn may_use_topic(&self, user: &str, topic: &str, privilege: Privilege) -> bool {
        let rels: Vec<RelationDef> = self.catalog.relations().into_iter().filter(|r| r.topic == topic).collect();
        rels.is_empty() || rels.iter().any(|r| self.may(user, r, privilege))
    }

    /// For the Kafka server: whether `user` may delete `topic` (a superuser, or the owner of
    /// every relation over it; relations keep their topics anyway, see `topic_user`).
    pub fn may_delete_topic(&self, user: &str, topic: &str) -> bool {
        self.catalog.relations().iter().filter(|r| r.topic == topic).all(|r| self.owns(user, r))
    }
}

/// The grants as the Kafka server sees them (`auth::TopicPolicy`).
pub(super) struct Grants(pub(super) std::sync::Weak<Engine>);

impl TopicPolicy for Grants {
    fn may(&self, user: &str, topic: &str, access: TopicAccess) -> bool {
        let Some(engine) = self.0.upgrade() else { return false };
        match access {
            TopicAccess::Read => engine.may_use_topic(user, topic, Privilege::Select),
            TopicAccess::Write => engine.may_use_topic(user, topic, Privilege::Insert),
            TopicAccess::Delete => engine.may_delete_topic(user, topic),
        }
    }

    fn grants(&self) -> Vec<(String, String, TopicAccess)> {
        let Some(engine) = self.0.upgrade() else { return Vec::new() };
        let mut out = Vec::new();
        for rel in engine.catalog.relations() {
            if let Some(owner) = &rel.owner {
                for access in [TopicAccess::Read, TopicAccess::Write, TopicAccess::Delete] {
                    out.push((rel.topic.clone(), owner.clone(), access));
                }
            }
            for (user, privileges) in &rel.grants {
                for p in privileges {
                    let access = match p {
                        Privilege::Select => TopicAccess::Read,
                        Privilege::Insert => TopicAccess::Write,
                    };
                    out.push((rel.topic.clone(), user.clone(), access));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, a.2 as u8).cmp(&(&b.0, &b.1, b.2 as u8)));
        out.dedup();
        out
    }
}

fn grant_to(grants: &mut BTreeMap<String, Vec<Privilege>>, user: &str, privileges: &[Privilege], revoke: bool) {
    let held = grants.entry(user.to_string()).or_default();
    for p in privileges {
        if revoke {
            held.retain(|h| h != p);
        } else if !held.contains(p) {
            held.push(*p);
        }
    }
    held.sort();
    if held.is_empty() {
        grants.remove(user);
    }
}
