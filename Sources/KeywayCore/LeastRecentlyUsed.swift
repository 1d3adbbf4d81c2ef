/// A table of at most ``capacity`` entries that forgets the least recently used
/// one to make room for a new one.
///
/// The nodes live in one array and link to each other by index, so touching an
/// entry is O(1) and a full table allocates nothing more: memory stays flat
/// whatever keys callers invent.
struct LeastRecentlyUsed<Value> {
    private struct Node {
        var key: String
        var value: Value
        var older: Int
        var newer: Int
    }

    let capacity: Int
    private var slots: [String: Int] = [:]
    private var nodes: [Node] = []
    private var vacant: [Int] = []
    private var newest = -1
    private var oldest = -1

    init(capacity: Int) {
        precondition(capacity > 0, "a table needs room for one entry")
        self.capacity = capacity
    }

    var count: Int { slots.count }

    /// Runs `body` on `key`'s value, inserting `make()` first when the key is
    /// missing (and evicting the least recently used entry when full). The key
    /// becomes the most recently used.
    mutating func update<Result>(_ key: String, inserting make: () -> Value, _ body: (inout Value) throws -> Result) rethrows -> Result {
        let slot: Int
        if let existing = slots[key] {
            slot = existing
            unlink(slot)
        } else {
            if slots.count >= capacity { remove(nodes[oldest].key) }
            let node = Node(key: key, value: make(), older: -1, newer: -1)
            if let free = vacant.popLast() {
                nodes[free] = node
                slot = free
            } else {
                nodes.append(node)
                slot = nodes.count - 1
            }
            slots[key] = slot
        }
        linkAsNewest(slot)
        return try body(&nodes[slot].value)
    }

    /// Runs `body` on `key`'s value when present, without changing its recency.
    mutating func updateIfPresent<Result>(_ key: String, _ body: (inout Value) throws -> Result) rethrows -> Result? {
        guard let slot = slots[key] else { return nil }
        return try body(&nodes[slot].value)
    }

    mutating func remove(_ key: String) {
        guard let slot = slots.removeValue(forKey: key) else { return }
        unlink(slot)
        vacant.append(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let (older, newer) = (nodes[slot].older, nodes[slot].newer)
        if older >= 0 { nodes[older].newer = newer } else { oldest = newer }
        if newer >= 0 { nodes[newer].older = older } else { newest = older }
        nodes[slot].older = -1
        nodes[slot].newer = -1
    }

    private mutating func linkAsNewest(_ slot: Int) {
        nodes[slot].older = newest
        nodes[slot].newer = -1
        if newest >= 0 { nodes[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
