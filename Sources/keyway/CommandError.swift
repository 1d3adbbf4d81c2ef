/// A failure while running a command (as opposed to bad arguments): printed without the usage text.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
