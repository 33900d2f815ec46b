/// The thresholds of the run findings that are configurable (`findings:` in the daemon's
/// config). Findings are a pure function of a run's spans and these rules, so an audit bundle
/// records them (`manifest.json`) and its verifier derives the same findings again.
public struct FindingRules: Sendable, Equatable, Codable {
    /// A `loop` finding when the same tool is called with the same arguments this many times.
    public var loopRepeats: Int
    /// A `loop` finding when a run takes more steps (model and tool calls) than this; 0: no budget.
    public var stepBudget: Int

    public static let defaultLoopRepeats = 3

    public init(loopRepeats: Int = FindingRules.defaultLoopRepeats, stepBudget: Int = 0) {
        self.loopRepeats = loopRepeats
        self.stepBudget = stepBudget
    }

    public static let `default` = FindingRules()
}
