// A Kylin 3.1 node's ZooKeeper side, done by real Apache Curator the way
// Kylin does it: ServiceDiscovery registration under <base>/service
// (service "cluster_servers", LinkedHashMap payload {"description": mode})
// and, for job-capable modes, a LeaderSelector on <base>/job_engine/leader
// with id "host:port" and autoRequeue. A tiny HTTP server answers like
// kylin-sim and also reports what Curator itself sees:
//   GET /curator/instances -> [{"id","address","port","description","enabled"}...]
//   GET /curator/leader    -> {"leader": "<id of the lowest lock node>", "is_leader": bool}
// Like kylin-sim, `?delay_ms=N` answers after N ms and `?stall_ms=N` sends
// the head and half the body, then the rest after N ms (each logged).
// Prints "READY <port>" when registered; a shutdown hook (SIGTERM) closes the
// selector, the discovery and the client, which removes this node's znodes.
//
// Usage: CuratorNode --zk HOST:PORT[/chroot] --base /kylin/kylin_metadata
//        --name NAME --mode all|job|query --host 127.0.0.1 --port 0
//        [--service cluster_servers] [--session-timeout-ms 4000] [--id ID]

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderSelector;
import org.apache.curator.framework.recipes.leader.LeaderSelectorListenerAdapter;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;

public class CuratorNode {
    private static final AtomicBoolean leading = new AtomicBoolean(false);

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String zk = args.get("zk");
        String base = args.getOrDefault("base", "/kylin/kylin_metadata");
        String mode = args.getOrDefault("mode", "all");
        String host = args.getOrDefault("host", "127.0.0.1");
        String serviceName = args.getOrDefault("service", "cluster_servers");
        int sessionTimeout = Integer.parseInt(args.getOrDefault("session-timeout-ms", "4000"));

        HttpServer http = HttpServer.create(
                new InetSocketAddress("0.0.0.0", Integer.parseInt(args.getOrDefault("port", "0"))), 64);
        int port = http.getAddress().getPort();
        String name = args.getOrDefault("name", host + ":" + port);
        String hostPort = host + ":" + port;

        // Kylin 3.x: ExponentialBackoffRetry(3000, 3), connection timeout 15 s.
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(zk)
                .sessionTimeoutMs(sessionTimeout)
                .connectionTimeoutMs(15000)
                .retryPolicy(new ExponentialBackoffRetry(3000, 3))
                .build();
        client.start();
        client.blockUntilConnected();

        LinkedHashMap<String, String> payload = new LinkedHashMap<>();
        payload.put("description", mode);
        var builder = ServiceInstance.<LinkedHashMap>builder();
        if (args.containsKey("id")) {
            builder.id(args.get("id"));
        }
        ServiceInstance<LinkedHashMap> self = builder
                .name(serviceName)
                .address(host)
                .port(port)
                .payload(payload)
                .build();
        ServiceDiscovery<LinkedHashMap> discovery = ServiceDiscoveryBuilder.builder(LinkedHashMap.class)
                .client(client)
                .basePath(base + "/service")
                .thisInstance(self)
                .build();
        discovery.start();

        String leaderPath = base + "/job_engine/leader";
        LeaderSelector selector = new LeaderSelector(client, leaderPath, new LeaderSelectorListenerAdapter() {
            @Override
            public void takeLeadership(CuratorFramework c) throws Exception {
                leading.set(true);
                System.err.println("curator-node " + name + ": LEADER at_ms=" + System.currentTimeMillis());
                try {
                    new CountDownLatch(1).await();
                } finally {
                    leading.set(false);
                    System.err.println("curator-node " + name + ": NOT LEADER at_ms=" + System.currentTimeMillis());
                }
            }
        });
        selector.setId(hostPort);
        selector.autoRequeue();
        boolean candidate = mode.equals("all") || mode.equals("job") || mode.contains("job");
        if (candidate) {
            selector.start();
        }

        http.createContext("/", exchange -> answer(exchange, name, self.getId(), mode, serviceName, discovery, selector, client, leaderPath));
        // Slow requests must not hold up the others.
        http.setExecutor(Executors.newCachedThreadPool());
        http.start();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.err.println("curator-node " + name + ": shutting down");
            try {
                if (candidate) {
                    selector.close();
                    System.err.println("curator-node " + name + ": selector closed at_ms=" + System.currentTimeMillis());
                }
            } catch (Exception e) {
                System.err.println("close selector: " + e);
            }
            try {
                discovery.close();
            } catch (Exception e) {
                System.err.println("close discovery: " + e);
            }
            client.close();
            http.stop(0);
        }));
        System.out.println("READY " + port);
        System.out.flush();
        Thread.currentThread().join();
    }

    private static void answer(HttpExchange exchange, String name, String id, String mode, String serviceName,
            ServiceDiscovery<LinkedHashMap> discovery, LeaderSelector selector, CuratorFramework client,
            String leaderPath) {
        try {
            long bodyLen = 0;
            try (InputStream in = exchange.getRequestBody()) {
                byte[] buf = new byte[8192];
                int n;
                while ((n = in.read(buf)) > 0) {
                    bodyLen += n;
                }
            }
            String path = exchange.getRequestURI().getPath();
            int status = 200;
            String body;
            if (path.equals("/kylin/api/service_discovery/state/is_active_job_node")) {
                body = Boolean.toString(leading.get());
            } else if (path.equals("/curator/instances")) {
                StringBuilder sb = new StringBuilder("[");
                String[] names = exchange.getRequestURI().getQuery() != null
                        ? exchange.getRequestURI().getQuery().replaceFirst("^service=", "").split(",")
                        : new String[] {serviceName};
                boolean first = true;
                for (String service : names) {
                    Collection<ServiceInstance<LinkedHashMap>> instances = discovery.queryForInstances(service);
                    for (ServiceInstance<LinkedHashMap> instance : instances) {
                        if (!first) {
                            sb.append(',');
                        }
                        first = false;
                        Object description = instance.getPayload() == null ? null : instance.getPayload().get("description");
                        sb.append("{\"id\":").append(quote(instance.getId()))
                                .append(",\"name\":").append(quote(instance.getName()))
                                .append(",\"address\":").append(quote(instance.getAddress()))
                                .append(",\"port\":").append(instance.getPort())
                                .append(",\"description\":").append(quote(description == null ? null : description.toString()))
                                .append(",\"enabled\":").append(instance.isEnabled())
                                .append('}');
                    }
                }
                body = sb.append(']').toString();
            } else if (path.equals("/curator/leader")) {
                // getLeader works without starting the selector: it reads the participants.
                String leader;
                try {
                    leader = selector.getLeader().getId();
                } catch (Exception e) {
                    leader = "";
                }
                List<String> ids = new ArrayList<>();
                try {
                    selector.getParticipants().forEach(p -> ids.add(p.getId()));
                } catch (Exception e) {
                    // no participants yet
                }
                body = "{\"leader\":" + quote(leader.isEmpty() ? null : leader)
                        + ",\"is_leader\":" + leading.get()
                        + ",\"participants\":" + ids.stream().map(CuratorNode::quote).toList() + "}";
            } else {
                boolean query = path.equals("/kylin/api/query") || path.equals("/kylin/api/query/prestate");
                if (query && mode.equals("job")) {
                    status = 400;
                }
                String q = exchange.getRequestURI().getRawQuery();
                long delay = queryNumber(q, "delay_ms");
                if (delay > 0) {
                    System.err.println("curator-node " + name + ": delaying " + path + " " + delay + " ms ?" + q);
                    Thread.sleep(delay);
                }
                body = "{\"node\":" + quote(name) + ",\"id\":" + quote(id) + ",\"mode\":" + quote(mode)
                        + ",\"leader\":" + leading.get() + ",\"method\":" + quote(exchange.getRequestMethod())
                        + ",\"path\":" + quote(path) + ",\"query\":" + quote(q) + ",\"body_len\":" + bodyLen
                        + ",\"curator\":true}";
            }
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            exchange.sendResponseHeaders(status, bytes.length);
            long stall = queryNumber(exchange.getRequestURI().getRawQuery(), "stall_ms");
            try (OutputStream out = exchange.getResponseBody()) {
                if (stall > 0) {
                    int half = bytes.length / 2;
                    out.write(bytes, 0, half);
                    out.flush();
                    System.err.println("curator-node " + name + ": stalled " + path + " after half the body");
                    Thread.sleep(stall);
                    out.write(bytes, half, bytes.length - half);
                } else {
                    out.write(bytes);
                }
            }
        } catch (Exception e) {
            System.err.println("curator-node http: " + e);
            exchange.close();
        }
    }

    /** `name=<number>` in a raw query string, or 0. */
    private static long queryNumber(String query, String name) {
        if (query == null) {
            return 0;
        }
        for (String pair : query.split("&")) {
            if (pair.startsWith(name + "=")) {
                try {
                    return Long.parseLong(pair.substring(name.length() + 1));
                } catch (NumberFormatException e) {
                    return 0;
                }
            }
        }
        return 0;
    }

    private static String quote(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }
}
