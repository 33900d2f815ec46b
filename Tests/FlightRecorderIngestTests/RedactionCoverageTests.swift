import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderTesting
import Testing

/// Every string and bytes position of a request, every disguise of a detected form, and
/// key-named credentials with no configuration (issue 11, defects 5 and 6).
@Suite struct RedactionCoverageTests {
    /// Detected forms, each with the plain text the payload must not contain afterwards.
    static let forms: [(name: String, text: String, needle: String)] = [
        ("email", "jane.doe@example.com", "jane.doe@example.com"),
        ("percent-encoded email", "jane.doe%40example.com", "jane.doe%40example.com"),
        ("JSON-escaped email", #"jane.doe\u0040example.com"#, #"doe\u0040example"#),
        ("escaped slash in a URL", #"https:\/\/bob:s3cretpw@example.com\/x"#, "s3cretpw"),
        ("zero-width joiner in an email", "jane.doe\u{200D}@example.com", "example.com"),
        ("card with no-break spaces", "4111\u{00A0}1111\u{00A0}1111\u{00A0}1111", "1111\u{00A0}1111"),
        ("card", "4111 1111 1111 1111", "4111 1111 1111 1111"),
        ("AWS key", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("soft hyphen in an AWS key", "AKIAIOSF\u{00AD}ODNN7EXAMPLE", "ODNN7EXAMPLE"),
    ]

    /// Field numbers from the OTLP protos: a request whose every client string holds `text`.
    static func request(_ text: String) -> [UInt8] {
        func kv(_ w: inout ProtobufWriter, _ field: Int, key: String, value: String, bytes: Bool = false) {
            w.messageField(field) { k in
                k.stringField(1, key)
                k.messageField(2) { v in
                    if bytes { v.bytesField(7, Array(value.utf8)) } else { v.stringField(1, value) }
                }
            }
        }
        var w = ProtobufWriter()
        w.messageField(1) { rs in
            rs.messageField(1) { r in
                kv(&r, 1, key: "owner", value: text)
                kv(&r, 1, key: "key \(text)", value: "v")
                r.messageField(3) { e in  // entity_refs
                    e.stringField(1, "https://schemas/\(text)")
                    e.stringField(2, "type \(text)")
                    e.stringField(3, "id \(text)")
                    e.stringField(4, "description \(text)")
                }
            }
            rs.messageField(2) { ss in
                ss.messageField(1) { sc in
                    sc.stringField(1, "scope \(text)")
                    sc.stringField(2, "1.0 \(text)")
                    kv(&sc, 3, key: "scope.contact", value: text)
                }
                ss.messageField(2) { p in
                    p.bytesField(1, RequestBuilder.traceID(1))
                    p.bytesField(2, RequestBuilder.spanID(1))
                    p.stringField(3, "vendor=\(text)")  // trace_state
                    p.stringField(5, "span \(text)")
                    p.fixed64Field(7, 1_000)
                    p.fixed64Field(8, 2_000)
                    kv(&p, 9, key: "agent.run.id", value: "run-1")
                    kv(&p, 9, key: "arguments", value: #"{"to":"\#(text)"}"#)
                    kv(&p, 9, key: "blob", value: "raw \(text)", bytes: true)
                    kv(&p, 9, key: "k-\(text)", value: "value")
                    p.messageField(9) { k in
                        k.stringField(1, "nested")
                        k.messageField(2) { v in
                            v.messageField(5) { a in a.messageField(1) { x in x.stringField(1, text) } }
                        }
                    }
                    p.messageField(9) { k in
                        k.stringField(1, "map")
                        k.messageField(2) { v in
                            v.messageField(6) { l in kv(&l, 1, key: "inner \(text)", value: text) }
                        }
                    }
                    p.messageField(11) { e in  // event
                        e.fixed64Field(1, 1_500)
                        e.stringField(2, "event \(text)")
                        kv(&e, 3, key: "exception.message", value: text)
                    }
                    p.messageField(13) { l in  // link
                        l.bytesField(1, RequestBuilder.traceID(2))
                        l.bytesField(2, RequestBuilder.spanID(2))
                        l.stringField(3, "vendor=\(text)")
                        kv(&l, 4, key: "link.note", value: text)
                    }
                    p.messageField(15) { st in
                        st.stringField(2, "failed for \(text)")
                        st.varintField(3, 2)
                    }
                }
                ss.stringField(3, "https://schemas/\(text)")  // scope spans schema_url
            }
            rs.stringField(3, "https://schemas/\(text)")  // resource spans schema_url
        }
        return w.bytes
    }

    static func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard n.count <= haystack.count else { return false }
        return (0...(haystack.count - n.count)).contains {
            haystack[$0] == n[0] && Array(haystack[$0..<($0 + n.count)]) == n
        }
    }

    @Test(arguments: forms.map(\.name))
    func everyStringPositionIsScanned(form: String) throws {
        let f = try #require(Self.forms.first { $0.name == form })
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: .secureDefault)))
        let body = Self.request(f.text)
        let occurrences = Self.countOccurrences(body, f.needle)
        #expect(occurrences >= 24, "the probe places the form in every position")
        let batch = try decoder.decode(body)
        let survived = Self.countOccurrences(batch.payload, f.needle)
        #expect(survived == 0, "\(form) survived in \(survived) of \(occurrences) positions")
        #expect(batch.spans.first?.explicitRunID == "run-1")
    }

    static func countOccurrences(_ haystack: [UInt8], _ needle: String) -> Int {
        let n = Array(needle.utf8)
        guard n.count <= haystack.count else { return 0 }
        return (0...(haystack.count - n.count)).filter {
            haystack[$0] == n[0] && Array(haystack[$0..<($0 + n.count)]) == n
        }.count
    }

    @Test func ordinaryTextIsLeftAlone() throws {
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: .secureDefault)))
        let body = Self.request("100% of 20 tasks \\ done in 3.2 s")
        #expect(try decoder.decode(body).payload == body)
    }

    @Test(arguments: [
        "user.password", "db_password", "PASSWORD", "http.request.header.authorization",
        "http.response.header.set-cookie",
        "x-api-key", "api_key", "apikey", "client_secret", "aws.secret_key", "github_token", "oauth.refresh_token",
        "private_key", "session.cookie", "config.credentials", "app.passwd",
    ])
    func credentialKeysAreMaskedByDefault(key: String) throws {
        let secret = "correct-horse-battery-staple-77"
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: .secureDefault)))
        let body = RequestBuilder.request(
            resource: [("service.name", .string("agent")), (key, .string(secret))],
            scope: [(key, .string(secret))],
            spans: [
                TestSpan(
                    trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1),
                    attributes: [
                        (key, .string(secret)), ("list", .kvlist([(key, .string(secret))])),
                        ("arr", .array([.kvlist([(key, .bytes(Array(secret.utf8)))])])), (key + ".n", .int(77)),
                    ])
            ])
        let payload = try decoder.decode(body).payload
        let leaked = Self.contains(payload, secret)
        #expect(!leaked)
        let span = try #require(try payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.attributes[key] == .string("[REDACTED:credential_key]"))
        #expect(span.resource.attributes[key] == .string("[REDACTED:credential_key]"))
        #expect(span.attributes[RequestRedactor.rulesKey] == .array([.string("credential_key")]))
    }

    @Test(arguments: [
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "password_policy.min_length", "token_count",
        "idempotency.key", "operation.id", "gen_ai.tool.call.id", "keyboard.layout", "secretary.name",
    ])
    func ordinaryKeysAreNotCredentials(key: String) {
        #expect(!CredentialKeys.matches(key))
    }

    @Test func credentialKeysCanBeTurnedOffOrOverriddenByARule() throws {
        let secret = "correct-horse-battery-staple-77"
        let body = RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1),
                attributes: [("user.password", .string(secret)), ("db.token", .string(secret))])
        ])
        var off = RedactionPolicy()
        off.defaultSet.credentialKeys = false
        let plain = try ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: off))).decode(
            body)
        let stored = Self.contains(plain.payload, secret)
        #expect(stored)

        var keep = RedactionPolicy()
        keep.defaultSet.rules = [.init(name: "keep-db-token", keys: [.exact("db.token")], action: .keep)]
        let kept = try ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: keep))).decode(
            body)
        let span = try #require(
            try kept.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.attributes["db.token"] == .string(secret))
        #expect(span.attributes["user.password"] == .string("[REDACTED:credential_key]"))
    }
}
