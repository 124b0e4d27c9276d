// A single-process HDFS for Sluice's tests: Hadoop's MiniDFSCluster (one NameNode on
// 127.0.0.1:PORT, one DataNode, replication 1) that hdfs.sh starts, controls and stops.
//
//   java MiniHdfs PORT HOME
//
// It writes "ready" to HOME/state once the cluster answers, then polls HOME/command for
// `stop-namenode`, `start-namenode` (same port, same metadata) and `shutdown`, and
// acknowledges each by rewriting HOME/state. Data lives in HOME/data.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public final class MiniHdfs {
  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    Path home = Paths.get(args[1]);
    Path data = home.resolve("data");
    boolean fresh = !Files.exists(data.resolve("name1"));

    Configuration conf = new Configuration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, data.toString());
    conf.set("dfs.replication", "1");
    conf.setBoolean("dfs.permissions.enabled", false);
    // Everything on loopback; only the NameNode's RPC port is fixed.
    conf.set("dfs.namenode.http-address", "127.0.0.1:0");
    conf.set("dfs.datanode.address", "127.0.0.1:0");
    conf.set("dfs.datanode.http.address", "127.0.0.1:0");
    conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
    conf.set("dfs.datanode.hostname", "127.0.0.1");
    // A restarted NameNode leaves safe mode as soon as the DataNode reports.
    conf.set("dfs.namenode.safemode.extension", "0");
    conf.set("dfs.heartbeat.interval", "1");

    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf, data.toFile())
            .nameNodePort(port)
            .numDataNodes(1)
            .format(fresh)
            .build();
    cluster.waitActive();
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
    state(home, "ready");

    Path command = home.resolve("command");
    while (true) {
      if (Files.exists(command)) {
        String what = Files.readString(command, StandardCharsets.UTF_8).trim();
        Files.delete(command);
        switch (what) {
          case "stop-namenode":
            cluster.shutdownNameNode(0);
            state(home, "namenode-stopped");
            break;
          case "start-namenode":
            cluster.restartNameNode(0, true);
            cluster.waitActive();
            state(home, "ready");
            break;
          case "shutdown":
            cluster.shutdown();
            state(home, "stopped");
            System.exit(0);
            break;
          default:
            System.err.println("unknown command: " + what);
        }
      }
      Thread.sleep(100);
    }
  }

  private static void state(Path home, String state) throws Exception {
    Path tmp = home.resolve("state.tmp");
    Files.writeString(tmp, state + "\n", StandardCharsets.UTF_8);
    Files.move(tmp, home.resolve("state"), StandardCopyOption.ATOMIC_MOVE);
    System.out.println("MiniHdfs: " + state);
  }
}
