/// What the probe of one resource should be, and what it is: the controller's level-triggered
/// decision (docs/mqtt.md), pure so it is tested without processes, sockets or sleeps.
public enum ProbeReconciler {
    /// The desired probe, read from the resource (nil when the resource is gone).
    public struct Desired: Sendable, Equatable {
        public var image: String?
        public var args: [String]
        public var enabled: Bool
        public var generation: Int64
        /// `status.telemetry.lastSeen`, as seconds on the controller's clock (nil: never).
        public var lastSample: Double?
        /// The probe's own `online`/`offline` announcement (condition `ProbeConnected`).
        public var announcedOffline: Bool

        public init(image: String?, args: [String], enabled: Bool, generation: Int64, lastSample: Double?, announcedOffline: Bool) {
            self.image = image
            self.args = args
            self.enabled = enabled
            self.generation = generation
            self.lastSample = lastSample
            self.announcedOffline = announcedOffline
        }

        /// Whether the local runtime runs a process for it (else the probe is external, e.g. the
        /// device publishing itself, and only its data is judged).
        public var managed: Bool { enabled && !(image ?? "").isEmpty }
    }

    /// The local runtime's view of the process.
    public struct Actual: Sendable, Equatable {
        public var running: Bool = false
        /// The generation the running (or last) process was started for.
        public var generation: Int64?
        public var startedAt: Double?
        /// Exit times of recent crashes (non-zero exits or signals), newest last.
        public var crashes: [Double] = []
        public init() {}
    }

    public struct Policy: Sendable, Equatable {
        /// Crashes within `crashWindow` seconds that make a crash loop.
        public var crashLoopCount = 3
        public var crashWindow: Double = 60
        /// Back-off before restarting after the n-th recent crash: base · 2^(n-1), at most max.
        public var restartBase: Double = 1
        public var restartMax: Double = 30
        /// No sample for this long after data flowed or after start: the probe is silent.
        public var silence: Double = 30
        /// No agent heartbeat (`AgentReady.lastHeartbeatTime`) for this long: the agent failed.
        public var heartbeatTimeout: Double = 30
        public init() {}
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Start this probe.
        case start(Desired)
        case stop
        /// Stop and start again as this probe (a new generation).
        case restart(Desired)

        /// A process starts (a fresh start or a restart).
        public var starts: Bool {
            switch self {
            case .start, .restart: true
            case .none, .stop: false
            }
        }
    }

    public struct Decision: Sendable, Equatable {
        public var action: Action
        public var phase: ProbePhase
        /// `ProbeReady` condition: reason and message (status True only when Synchronous).
        public var reason: String
        public var message: String
        /// Reconcile again after this many seconds (nil: only on the next change).
        public var requeueAfter: Double?
    }

    /// Since when the probe has been quiet: its last sample or (managed) its start, whichever is later.
    static func silenceStart(_ desired: Desired, _ actual: Actual) -> Double? {
        guard desired.managed else { return desired.lastSample }
        guard let started = actual.startedAt else { return nil }
        return max(started, desired.lastSample ?? started)
    }

    public static func decide(_ desired: Desired?, _ actual: Actual, now: Double, policy: Policy = Policy()) -> Decision {
        guard let desired else {
            return Decision(
                action: actual.running ? .stop : .none, phase: .notReady, reason: "ResourceDeleted", message: "the resource was deleted", requeueAfter: nil)
        }
        guard desired.enabled else {
            return Decision(
                action: actual.running ? .stop : .none, phase: .notReady, reason: "ProbeDisabled", message: "probeEnabled is false", requeueAfter: nil)
        }
        let recentCrashes = actual.crashes.filter { now - $0 <= policy.crashWindow }
        let crashLooping = recentCrashes.count >= policy.crashLoopCount

        var action: Action = .none
        var requeue: Double?
        if desired.managed {
            if actual.running {
                if let g = actual.generation, g != desired.generation { action = .restart(desired) }
            } else if let lastCrash = recentCrashes.last {
                let wait = min(policy.restartMax, policy.restartBase * Double(1 << min(recentCrashes.count - 1, 20)))
                if now - lastCrash >= wait { action = .start(desired) } else { requeue = wait - (now - lastCrash) }
            } else {
                action = .start(desired)
            }
        } else if actual.running {
            action = .stop  // the image was removed: nothing for the runtime to run
        }

        // The phase, judged from what is observable now.
        // A process started now has had no time to speak: silence counts from its start.
        let freshStart = action.starts
        func silentFor(since t: Double) -> Double { now - t }
        let phase: ProbePhase
        let reason: String
        let message: String
        if crashLooping {
            (phase, reason, message) = (.failed, "ProbeCrashLoop", "the probe crashed \(recentCrashes.count) times in \(Int(policy.crashWindow)) s")
        } else if desired.announcedOffline {
            (phase, reason, message) = (.failed, "ProbeOffline", "the probe announced offline (or its connection died)")
        } else if let last = desired.lastSample, silentFor(since: last) <= policy.silence,
            actual.startedAt.map({ last >= $0 - 1 }) ?? true
        {
            (phase, reason, message) = (.synchronous, "DataFlowing", "samples are arriving")
            requeue = min(requeue ?? .infinity, policy.silence - silentFor(since: last) + 0.5)
        } else if !freshStart, let since = silenceStart(desired, actual), actual.running || !desired.managed,
            silentFor(since: since) > policy.silence
        {
            (phase, reason, message) = (.failed, "ProbeSilent", "no sample for more than \(Int(policy.silence)) s")
        } else if desired.managed {
            (phase, reason, message) = (.pending, "ProbeStarting", "the probe is starting; no sample yet")
            requeue = min(requeue ?? .infinity, policy.silence - silentFor(since: freshStart ? now : (actual.startedAt ?? now)) + 0.5)
        } else {
            (phase, reason, message) = (.notReady, "NoProbeData", "no probe runs here and no sample has arrived")
        }
        return Decision(action: action, phase: phase, reason: reason, message: message, requeueAfter: requeue.map { max(0.1, $0) })
    }
}
