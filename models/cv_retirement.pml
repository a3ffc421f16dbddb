/*
 * cv_retirement.pml: the CV ("version-consistent") live upgrade of one service S,
 * v1 -> v2, and the retirement of v1 by TraceidSet / DiffSet (docs/mesh.md).
 * See models/README.md; scripts/check_models.sh runs every check.
 *
 * Parts (each an asynchronous process; messages go through channels):
 *   Txn(t)          a distributed transaction (trace t) that makes NCALLS sequential
 *                   sub-calls to S, alternately through two callers' sidecars
 *                   (Portal->S, then Portal->Proc->S, ...), and then completes at the
 *                   ingress gateway.
 *   CallerSidecar   a caller's Envoy: applies route configs pushed by the controller
 *                   (whole-table swaps, in order) and acknowledges them.
 *   V1Sidecar       v1's inbound Envoy: applies the "block unpinned requests" config and
 *                   then writes a marker into v1's log stream.
 *   V1TraceManager  v1's trace manager: TraceidSet fed by v1's log stream (FIFO), which
 *                   carries admissions and the marker only (no request ends: the
 *                   retirement needs none, see active1 below); locks the
 *                   set at the marker and ships it to the gateway's trace manager.
 *   GatewayTM       the gateway's trace manager: completed traces, DiffSet, "v1 is free".
 *   Controller      the upgrade steps.
 *
 * Properties (assertions, checked in every reachable state / on every transition):
 *   visited != 3              no transaction runs sub-transactions on two versions of S
 *   !(dest == 1 && retired)   no request is sent to a retired version
 *   pin != 1                  no request of a trace that ran on v1 reaches v1 once retired
 *   active1 == 0              v1 is not retired while a request is in progress on it
 * and, with LIVENESS, ltl live: <>(retired && ncomplete == NT), checked with pan -a -f.
 *
 * Variants (spin -D...): the default is the CV protocol.  Each of these must fail:
 *   STRATEGY_ROLLING    switch the default to v2 with no pin routes, retire v1 when idle
 *   SKIP_BLOCK          snapshot v1's TraceidSet without blocking unpinned requests first
 *   RECORD_AT_END       v1's visits reach the TraceidSet when a request ends, not when it
 *                       is admitted (an end-of-request access log)
 *   SKIP_PIN_WAIT       push "switch default" without waiting until every caller has the
 *                       pin routes
 *   LOCK_ON_COMMAND     v1's trace manager locks on a message that does not travel in
 *                       v1's log stream, so records still in the stream are dropped
 *   RETRY_SAME_CLUSTER  (liveness) a 503 from v1 is retried on v1 itself, as Envoy's
 *                       retry_policy does, instead of re-selecting the route
 * WITNESS=n turns reachability probe n into an assertion that must fail, to show that the
 * situation the protocol has to handle does occur in the model (no vacuous pass):
 *   1  an unpinned request gets a 503 from blocked v1 and is retried
 *   2  v1 admits a request pinned to it after the block took effect
 *   3  the DiffSet is not empty when the gateway computes it
 *   4  an unpinned request sent before the retirement reaches retired v1 and is refused
 *   5  a transaction that ran on v2 before v1 was retired runs on v2 again after it
 */

#ifndef NT
#define NT 3            /* concurrent distributed transactions (trace ids 0..NT-1) */
#endif
#ifndef NCALLS
#define NCALLS 3        /* sub-calls to S per transaction */
#endif

#ifdef WITNESS
#define REACHED(n)       assert(WITNESS != n)
#define REACHED_IF(n, c) assert(!(c) || WITNESS != n)
#else
#define REACHED(n)       skip
#define REACHED_IF(n, c) skip
#endif

#define NCALLERS 2      /* caller sidecars: 0 = Portal, 1 = Proc */
#define LOGCAP  (NT + 1)   /* v1's log stream never fills: one record per trace + marker */

mtype = {
  /* route tables pushed to the callers' sidecars (whole-table swaps) */
  PINS,     /* pin routes S-v1 -> v1, S-v2 -> v2; default still v1      (report fig. 14) */
  SWITCH,   /* pin routes; default v2                                   (report fig. 17) */
  CLEAN,    /* after retirement: no pin routes, default v2 (only version) (fig. 22)      */
  ROLL,     /* rolling baseline: no pin routes, default v2                                */
  /* to v1's inbound sidecar */
  BLOCK,    /* v1's inbound sidecar: refuse requests not pinned to v1 with 503            */
  SNAP,     /* SKIP_BLOCK only: v1's inbound sidecar marks the log stream, no blocking    */
  /* v1's log stream, v1's trace manager, the gateway's trace manager */
  REC,      /* log stream record: trace t visited v1                                      */
  MARK,     /* log stream marker: the block has taken effect, lock the set here           */
  FREE      /* gateway TM -> controller: DiffSet is empty                                 */
};

/* ---- shared state: the data plane as it is configured right now ---- */
bool pinRoutes[NCALLERS];   /* caller's table has the x-version pin routes */
byte dflt[NCALLERS];        /* caller's default version for unpinned requests (1 or 2) */
bool block1;                /* v1's inbound sidecar refuses requests not pinned to v1 */
bool retired;               /* v1 retired: its instances are gone */
byte active1;               /* requests admitted to v1 and not yet ended */

byte ncomplete;             /* transactions completed at the gateway */

/* ---- channels (asynchronous, FIFO) ---- */
#ifdef SKIP_PIN_WAIT
#define CFGCAP 2
chan ack = [4] of { bit };              /* caller sidecar -> controller: applied */
#else
#define CFGCAP 1
chan ack = [2] of { bit };
#endif
chan cfgPortal = [CFGCAP] of { mtype };  /* controller -> caller sidecar: route table */
chan cfgProc = [CFGCAP] of { mtype };
chan cfg1 = [1] of { mtype };           /* controller -> v1's inbound sidecar */
chan logv1 = [LOGCAP] of { mtype, byte };  /* v1's sidecar -> v1's trace manager */
chan ship = [1] of { byte };            /* v1's TM -> gateway TM: locked TraceidSet */
chan done = [NT] of { byte };           /* gateway Envoy -> gateway TM: trace completed */
chan ctl = [1] of { mtype };            /* gateway TM -> controller: DiffSet empty */
#ifdef LOCK_ON_COMMAND
chan lockv1 = [1] of { mtype, byte };   /* "lock now", outside the log stream */
#define MARKCHAN lockv1
#else
#define MARKCHAN logv1                  /* the marker follows every earlier record */
#endif

proctype Txn(byte t)
{
  byte i = 0;        /* sub-calls to S finished */
  byte dest = 0;     /* version the current request was routed to */
  byte pin = 0;      /* version of S the trace is pinned to (0 = none): its x-version */
  byte visited = 0;  /* bit 1: ran a sub-transaction on v1; bit 2: on v2 */

ROUTE:
  /* The caller's sidecar (Portal for even i, Proc for odd i) selects the route with the
   * table it has now: the pin route if the trace carries a pin and the table has pin
   * routes, else the default. */
  atomic {
    if
    :: pin != 0 && pinRoutes[i % NCALLERS] -> dest = pin
    :: else -> dest = dflt[i % NCALLERS]
    fi;
    /* property: no request is sent to a retired version */
    assert(!(dest == 1 && retired))
  }
  /* the request is in flight: anything may happen before it arrives */
ARRIVE:
  atomic {
    if
    :: dest == 1 && retired ->
         /* v1's instances are gone: the request is refused (not a visit) and the caller
          * re-routes it.  A trace that already ran on v1 arriving here is a failure. */
         assert(pin != 1);
         REACHED(4);
#ifdef RETRY_SAME_CLUSTER
         goto ARRIVE
#else
         goto ROUTE
#endif
    :: dest == 1 && !retired && block1 && pin != 1 ->
         /* 503 from v1's sidecar, not a visit; the caller's sidecar retries */
         REACHED(1);
#ifdef RETRY_SAME_CLUSTER
         goto ARRIVE
#else
         goto ROUTE
#endif
    :: else ->
         /* admitted: a sub-transaction of t runs on version dest */
         if
         :: dest == 1 ->
#ifndef RECORD_AT_END
              /* v1's sidecar logs the visit when the request starts (only a trace's
               * first record can change the TraceidSet, so later ones are left out) */
              if
              :: !(visited & 1) -> logv1!REC,t
              :: else -> skip
              fi;
#endif
              REACHED_IF(2, block1);
              active1++
         :: else -> skip
         fi;
         REACHED_IF(5, retired && visited == 2);
         visited = visited | dest;
         /* property: no transaction runs sub-transactions on two versions of S */
         assert(visited != 3);
         if
         :: dest == 2 -> goto RESPONSE   /* nothing observes a v2 request in progress */
         :: else -> skip
         fi
    fi
  }
  /* the sub-transaction runs on v1; then it ends */
  d_step {
    active1--;
#ifdef RECORD_AT_END
    /* the visit is logged when the request ends (first v1 request of the trace only) */
    if
    :: pin != 1 -> logv1!REC,t
    :: else -> skip
    fi;
#endif
    skip
  }
RESPONSE:
  /* the response, with x-version: S-v<dest>, reaches the caller: the trace is pinned */
  atomic {
    pin = dest; dest = 0; i++;
    if
    :: i < NCALLS -> goto ROUTE   /* other work, then the next sub-call to S */
    :: else -> skip
    fi
  };
  /* the root request returns through the gateway; its access log reaches the gateway TM */
  d_step { ncomplete++; done!t; i = 0; pin = 0; visited = 0 }
}

proctype CallerSidecar(byte c; chan cfg)
{
  mtype m;
  xr cfg;
end:
  do
  :: d_step {
       cfg?m;
       if
       :: m == PINS   -> pinRoutes[c] = true;  dflt[c] = 1
       :: m == SWITCH -> pinRoutes[c] = true;  dflt[c] = 2
       :: m == CLEAN  -> pinRoutes[c] = false; dflt[c] = 2
       :: m == ROLL   -> pinRoutes[c] = false; dflt[c] = 2
       fi;
       m = 0
     };
     ack!1
  od
}

proctype V1Sidecar()
{
  mtype m;
  xr cfg1;
#ifdef LOCK_ON_COMMAND
  xs lockv1;
#endif
end:
  do
  :: d_step {
       cfg1?m;
       if
       :: m == BLOCK -> block1 = true
       :: else -> skip
       fi;
       m = 0;
       /* every admission logged before this point is ahead of the marker (FIFO) */
       MARKCHAN!MARK,0
     }
  od
}

proctype V1TraceManager()
{
  byte set = 0;     /* TraceidSet: bit t = trace t visited v1 */
  bool locked = false;
  byte t;
  xr logv1; xs ship;
#ifdef LOCK_ON_COMMAND
  xr lockv1;
#endif
end:
  do
  :: d_step {
       logv1?REC,t;
       if
       :: !locked -> set = set | (1 << t)
       :: else -> skip        /* locked: no more additions */
       fi;
       t = 0
     }
  :: d_step { MARKCHAN?MARK,t; locked = true; t = 0 };
     ship!set
  od
}

proctype GatewayTM()
{
  byte completed = 0;   /* traces whose root request returned through the gateway */
  byte diff = 0;        /* DiffSet = shipped TraceidSet - completed, then shrinking */
  bool have = false;    /* DiffSet computed and v1 not yet reported free */
  byte t;
  xr ship; xr done; xs ctl;
end:
  do
  :: d_step {
       done?t;
       completed = completed | (1 << t);
       if
       :: have -> diff = diff & ~(1 << t)
       :: else -> skip
       fi;
       t = 0
     };
     if
     :: have && diff == 0 -> have = false; ctl!FREE
     :: else -> skip
     fi
  :: d_step { ship?t; diff = t & ~completed; have = true; t = 0; REACHED_IF(3, diff != 0) };
     if
     :: diff == 0 -> have = false; ctl!FREE
     :: else -> skip
     fi
  od
}

proctype Controller()
{
  xs cfgPortal; xs cfgProc; xs cfg1; xr ack; xr ctl;
  /* v2 has been started and is healthy (it receives nothing until a table routes to it) */
#ifdef STRATEGY_ROLLING
  /* baseline: replace at once, no pins; retire v1 once it has no request in progress */
  cfgPortal!ROLL; cfgProc!ROLL;
  ack?_; ack?_;
  atomic { active1 == 0 -> retired = true }
#else
  /* 1. add the pin routes, default still v1; wait until every caller has them */
  cfgPortal!PINS; cfgProc!PINS;
#ifndef SKIP_PIN_WAIT
  ack?_; ack?_;
#endif
  /* 2. switch the default to v2 (pins kept) and wait until every caller has it */
  cfgPortal!SWITCH; cfgProc!SWITCH;
  ack?_; ack?_;
#ifdef SKIP_PIN_WAIT
  ack?_; ack?_;
#endif
  /* 3. block unpinned requests to v1 (503, retried onto v2); v1's sidecar then marks
   *    the log stream, where v1's trace manager locks and ships its TraceidSet */
#ifdef SKIP_BLOCK
  cfg1!SNAP;
#else
  cfg1!BLOCK;
#endif
  /* 4. wait for the gateway TM: DiffSet empty */
  ctl?FREE;
  /* 5. retire v1: nothing may be running on it */
  atomic {
    /* property: v1 is not retired while a request is in progress on it */
    assert(active1 == 0);
    retired = true
  }
  /* 6. clean up to the initial rule shape with v2 as the only version */
  cfgPortal!CLEAN; cfgProc!CLEAN;
  ack?_; ack?_
#endif
}

init
{
  byte k = 0;
  atomic {
    dflt[0] = 1; dflt[1] = 1;    /* initial table: everything to v1, no pin routes */
    do
    :: k < NT -> run Txn(k); k++
    :: else -> break
    od;
    k = 0;
    run CallerSidecar(0, cfgPortal); run CallerSidecar(1, cfgProc);
    run V1Sidecar(); run V1TraceManager(); run GatewayTM();
    run Controller()
  }
}

#ifdef LIVENESS
/* bounded transactions: v1 is eventually retired and every transaction completes */
ltl live { <> (retired && ncomplete == NT) }
#endif
